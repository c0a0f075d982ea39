"""The generator: text-to-image diffusion models served by Triton, with recorded seeds.

Domain modules (plain Python): `models` (the registry of named model configurations and
request validation), `tiny` (tiny pipelines of the real diffusers classes, built offline),
`pipelines` (loading a pipeline and the batched generation core). `triton/` is the Triton
model repository template (`config.pbtxt` + `1/model.py`, Python backend, dynamic batching)
and `triton_server` writes repositories from it and runs nvidia-pytriton's bundled
`tritonserver` (`iconicity serve triton`).
"""

"""Triton Python backend serving one diffusers pipeline (one registry entry).

A thin adapter over `services.generator.pipelines.Generator`: it reads the model-level
parameters, loads the pipeline once per instance, and in `execute` turns each request's
tensors into `GenerationRequest`s, lets the generator group those that can share a pipeline
call (dynamic batching that really batches), and turns the results back into tensors. An
invalid request gets its own error; the other requests of the batch are served.

Inputs ([B, 1] each): PROMPT, NEGATIVE_PROMPT (optional), SEED, STEPS, GUIDANCE_SCALE,
HEIGHT, WIDTH. Outputs: IMAGE [B, H, W, 3] uint8, ELAPSED_MS [B, 1], BATCH_SIZE [B, 1].
"""

from __future__ import annotations

import dataclasses
import gc
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from services.generator.models import ModelConfig
from services.generator.pipelines import GenerationRequest, Generator, validate_generation

_NAMED_PARAMETERS = ("pipeline", "pipeline_class", "dtype", "scheduler", "revision")


def _error(message: str):
    try:
        return pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
    except (AttributeError, TypeError):  # older python backends: message only
        return pb_utils.TritonError(message)


def _column(request, name: str, required: bool = True) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        if required:
            raise ValueError(f"input {name} is missing")
        return None
    return tensor.as_numpy().reshape(-1)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def parse_request(request) -> list[GenerationRequest]:
    """The rows of one Triton request as generation requests (ValueError if malformed)."""
    prompts = _column(request, "PROMPT")
    negatives = _column(request, "NEGATIVE_PROMPT", required=False)
    columns = {name: _column(request, name) for name in ("SEED", "STEPS", "GUIDANCE_SCALE", "HEIGHT", "WIDTH")}
    rows = len(prompts)
    for name, values in [*columns.items(), ("NEGATIVE_PROMPT", negatives)]:
        if values is not None and len(values) != rows:
            raise ValueError(f"input {name} has {len(values)} rows, PROMPT has {rows}")
    out = []
    for i in range(rows):
        out.append(GenerationRequest(
            prompt=_text(prompts[i]),
            negative_prompt=_text(negatives[i]) if negatives is not None else "",
            seed=int(columns["SEED"][i]),
            steps=int(columns["STEPS"][i]),
            guidance=float(columns["GUIDANCE_SCALE"][i]),
            height=int(columns["HEIGHT"][i]),
            width=int(columns["WIDTH"][i]),
        ))
    if len({(r.height, r.width) for r in out}) > 1:
        raise ValueError("the rows of one request must share HEIGHT and WIDTH; send different sizes as separate requests")
    return out


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}
        data = json.loads(params.get("model_config") or "null") or {"name": model_config["name"],
                                                                      "pipeline": params["pipeline"]}
        config = ModelConfig.from_dict(data)
        overrides = {k: params[k] or None for k in _NAMED_PARAMETERS if k in params}
        if overrides.get("dtype") is None:
            overrides.pop("dtype", None)
        if overrides.get("pipeline") is None:
            overrides.pop("pipeline", None)
        self.config = dataclasses.replace(config, name=model_config["name"], **overrides)
        device = params.get("device") or "auto"
        if device == "auto":
            kind = args.get("model_instance_kind", "CPU")
            device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu"
        self.logger = pb_utils.Logger
        self.logger.log_info(f"{self.config.name}: loading {self.config.pipeline} on {device} ({self.config.dtype})")
        self.generator = Generator.load(self.config, device=device,
                                        generator_device=params.get("generator_device") or "cpu",
                                        cpu_threads=int(params.get("cpu_threads") or 0) or None)
        import torch

        self.logger.log_info(f"{self.config.name}: ready on {device} with {torch.get_num_threads()} torch threads")

    def execute(self, requests):
        responses: list = [None] * len(requests)
        owners: list[int] = []
        items: list[GenerationRequest] = []
        for index, request in enumerate(requests):
            try:
                rows = parse_request(request)
                for row in rows:
                    validate_generation(self.config, row)
            except ValueError as error:
                responses[index] = pb_utils.InferenceResponse(output_tensors=[], error=_error(str(error)))
                continue
            owners.extend([index] * len(rows))
            items.extend(rows)
        outcomes = self.generator.generate(items) if items else []
        for index in range(len(requests)):
            if responses[index] is not None:
                continue
            mine = [outcome for owner, outcome in zip(owners, outcomes) if owner == index]
            failed = next((o for o in mine if isinstance(o, Exception)), None)
            if failed is not None:
                error = _error(str(failed)) if isinstance(failed, ValueError) else pb_utils.TritonError(
                    f"{self.config.name}: generation failed: {type(failed).__name__}: {failed}")
                responses[index] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            responses[index] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("IMAGE", np.stack([o.image for o in mine])),
                pb_utils.Tensor("ELAPSED_MS", np.array([[o.elapsed_ms] for o in mine], dtype=np.float32)),
                pb_utils.Tensor("BATCH_SIZE", np.array([[o.batch_size] for o in mine], dtype=np.int32)),
            ])
        return responses

    def finalize(self):
        generator, self.generator = getattr(self, "generator", None), None
        del generator
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # finalize must not raise
            pass
        # The stub exits next; the interpreter's last collections would walk every object of
        # torch, diffusers and transformers (seconds of CPU while the next run's work waits).
        gc.freeze()

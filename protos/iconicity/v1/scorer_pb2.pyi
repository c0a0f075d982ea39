from iconicity.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterReferenceRequest(_message.Message):
    __slots__ = ("images", "reference_id", "imagery")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGERY_FIELD_NUMBER: _ClassVar[int]
    images: ReferenceImages
    reference_id: str
    imagery: _common_pb2.Imagery
    def __init__(self, images: _Optional[_Union[ReferenceImages, _Mapping]] = ..., reference_id: _Optional[str] = ..., imagery: _Optional[_Union[_common_pb2.Imagery, str]] = ...) -> None: ...

class ReferenceImages(_message.Message):
    __slots__ = ("reference_id", "images")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    def __init__(self, reference_id: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ...) -> None: ...

class RegisterReferenceResponse(_message.Message):
    __slots__ = ("handle", "reference_id", "n_images", "kept_images", "imagery")
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    N_IMAGES_FIELD_NUMBER: _ClassVar[int]
    KEPT_IMAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGERY_FIELD_NUMBER: _ClassVar[int]
    handle: str
    reference_id: str
    n_images: int
    kept_images: _containers.RepeatedScalarFieldContainer[str]
    imagery: _common_pb2.Imagery
    def __init__(self, handle: _Optional[str] = ..., reference_id: _Optional[str] = ..., n_images: _Optional[int] = ..., kept_images: _Optional[_Iterable[str]] = ..., imagery: _Optional[_Union[_common_pb2.Imagery, str]] = ...) -> None: ...

class ScoreSettings(_message.Message):
    __slots__ = ("reference_handle", "imagery", "recognition_encoder", "realization_encoder", "recognition_threshold", "reuse_threshold", "crt_variant")
    REFERENCE_HANDLE_FIELD_NUMBER: _ClassVar[int]
    IMAGERY_FIELD_NUMBER: _ClassVar[int]
    RECOGNITION_ENCODER_FIELD_NUMBER: _ClassVar[int]
    REALIZATION_ENCODER_FIELD_NUMBER: _ClassVar[int]
    RECOGNITION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REUSE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CRT_VARIANT_FIELD_NUMBER: _ClassVar[int]
    reference_handle: str
    imagery: _common_pb2.Imagery
    recognition_encoder: str
    realization_encoder: str
    recognition_threshold: float
    reuse_threshold: float
    crt_variant: _common_pb2.CrtVariant
    def __init__(self, reference_handle: _Optional[str] = ..., imagery: _Optional[_Union[_common_pb2.Imagery, str]] = ..., recognition_encoder: _Optional[str] = ..., realization_encoder: _Optional[str] = ..., recognition_threshold: _Optional[float] = ..., reuse_threshold: _Optional[float] = ..., crt_variant: _Optional[_Union[_common_pb2.CrtVariant, str]] = ...) -> None: ...

class ScoreImagesRequest(_message.Message):
    __slots__ = ("settings", "images")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    settings: ScoreSettings
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    def __init__(self, settings: _Optional[_Union[ScoreSettings, _Mapping]] = ..., images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ...) -> None: ...

class ScoreImagesResponse(_message.Message):
    __slots__ = ("images", "summary")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageScore]
    summary: ScoreSummary
    def __init__(self, images: _Optional[_Iterable[_Union[ImageScore, _Mapping]]] = ..., summary: _Optional[_Union[ScoreSummary, _Mapping]] = ...) -> None: ...

class StreamScoreImagesRequest(_message.Message):
    __slots__ = ("settings", "image")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    settings: ScoreSettings
    image: _common_pb2.Image
    def __init__(self, settings: _Optional[_Union[ScoreSettings, _Mapping]] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ...) -> None: ...

class StreamScoreImagesResponse(_message.Message):
    __slots__ = ("image", "summary")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    image: ImageScore
    summary: ScoreSummary
    def __init__(self, image: _Optional[_Union[ImageScore, _Mapping]] = ..., summary: _Optional[_Union[ScoreSummary, _Mapping]] = ...) -> None: ...

class ImageScore(_message.Message):
    __slots__ = ("index", "name", "recognition_similarity", "recognized", "vr", "vi", "reuse_map", "grid_rows", "grid_cols", "crop_similarity_max", "crop_similarity_mean", "crop_similarity_p90")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RECOGNITION_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZED_FIELD_NUMBER: _ClassVar[int]
    VR_FIELD_NUMBER: _ClassVar[int]
    VI_FIELD_NUMBER: _ClassVar[int]
    REUSE_MAP_FIELD_NUMBER: _ClassVar[int]
    GRID_ROWS_FIELD_NUMBER: _ClassVar[int]
    GRID_COLS_FIELD_NUMBER: _ClassVar[int]
    CROP_SIMILARITY_MAX_FIELD_NUMBER: _ClassVar[int]
    CROP_SIMILARITY_MEAN_FIELD_NUMBER: _ClassVar[int]
    CROP_SIMILARITY_P90_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    recognition_similarity: float
    recognized: bool
    vr: float
    vi: float
    reuse_map: _containers.RepeatedScalarFieldContainer[bool]
    grid_rows: int
    grid_cols: int
    crop_similarity_max: float
    crop_similarity_mean: float
    crop_similarity_p90: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., recognition_similarity: _Optional[float] = ..., recognized: _Optional[bool] = ..., vr: _Optional[float] = ..., vi: _Optional[float] = ..., reuse_map: _Optional[_Iterable[bool]] = ..., grid_rows: _Optional[int] = ..., grid_cols: _Optional[int] = ..., crop_similarity_max: _Optional[float] = ..., crop_similarity_mean: _Optional[float] = ..., crop_similarity_p90: _Optional[float] = ...) -> None: ...

class ScoreSummary(_message.Message):
    __slots__ = ("n_images", "n_references_kept", "cra", "vr", "vi", "crt", "crt_recognized_images", "crt_all_images", "crt_variant", "imagery", "recognition_encoder", "realization_encoder", "recognition_threshold", "reuse_threshold")
    N_IMAGES_FIELD_NUMBER: _ClassVar[int]
    N_REFERENCES_KEPT_FIELD_NUMBER: _ClassVar[int]
    CRA_FIELD_NUMBER: _ClassVar[int]
    VR_FIELD_NUMBER: _ClassVar[int]
    VI_FIELD_NUMBER: _ClassVar[int]
    CRT_FIELD_NUMBER: _ClassVar[int]
    CRT_RECOGNIZED_IMAGES_FIELD_NUMBER: _ClassVar[int]
    CRT_ALL_IMAGES_FIELD_NUMBER: _ClassVar[int]
    CRT_VARIANT_FIELD_NUMBER: _ClassVar[int]
    IMAGERY_FIELD_NUMBER: _ClassVar[int]
    RECOGNITION_ENCODER_FIELD_NUMBER: _ClassVar[int]
    REALIZATION_ENCODER_FIELD_NUMBER: _ClassVar[int]
    RECOGNITION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REUSE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    n_images: int
    n_references_kept: int
    cra: float
    vr: float
    vi: float
    crt: float
    crt_recognized_images: float
    crt_all_images: float
    crt_variant: _common_pb2.CrtVariant
    imagery: _common_pb2.Imagery
    recognition_encoder: str
    realization_encoder: str
    recognition_threshold: float
    reuse_threshold: float
    def __init__(self, n_images: _Optional[int] = ..., n_references_kept: _Optional[int] = ..., cra: _Optional[float] = ..., vr: _Optional[float] = ..., vi: _Optional[float] = ..., crt: _Optional[float] = ..., crt_recognized_images: _Optional[float] = ..., crt_all_images: _Optional[float] = ..., crt_variant: _Optional[_Union[_common_pb2.CrtVariant, str]] = ..., imagery: _Optional[_Union[_common_pb2.Imagery, str]] = ..., recognition_encoder: _Optional[str] = ..., realization_encoder: _Optional[str] = ..., recognition_threshold: _Optional[float] = ..., reuse_threshold: _Optional[float] = ...) -> None: ...

class ListEncodersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEncodersResponse(_message.Message):
    __slots__ = ("encoders",)
    ENCODERS_FIELD_NUMBER: _ClassVar[int]
    encoders: _containers.RepeatedCompositeFieldContainer[EncoderInfo]
    def __init__(self, encoders: _Optional[_Iterable[_Union[EncoderInfo, _Mapping]]] = ...) -> None: ...

class EncoderInfo(_message.Message):
    __slots__ = ("name", "description", "available", "recognition_threshold_static", "recognition_threshold_dynamic", "reuse_threshold", "weights")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RECOGNITION_THRESHOLD_STATIC_FIELD_NUMBER: _ClassVar[int]
    RECOGNITION_THRESHOLD_DYNAMIC_FIELD_NUMBER: _ClassVar[int]
    REUSE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    available: bool
    recognition_threshold_static: float
    recognition_threshold_dynamic: float
    reuse_threshold: float
    weights: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., available: _Optional[bool] = ..., recognition_threshold_static: _Optional[float] = ..., recognition_threshold_dynamic: _Optional[float] = ..., reuse_threshold: _Optional[float] = ..., weights: _Optional[str] = ...) -> None: ...

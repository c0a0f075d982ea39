from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReferenceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFERENCE_KIND_UNSPECIFIED: _ClassVar[ReferenceKind]
    REFERENCE_KIND_STILL: _ClassVar[ReferenceKind]
    REFERENCE_KIND_MOVING: _ClassVar[ReferenceKind]

class HarvestState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HARVEST_STATE_UNSPECIFIED: _ClassVar[HarvestState]
    HARVEST_STATE_RUNNING: _ClassVar[HarvestState]
    HARVEST_STATE_COMPLETE: _ClassVar[HarvestState]
    HARVEST_STATE_FAILED: _ClassVar[HarvestState]
REFERENCE_KIND_UNSPECIFIED: ReferenceKind
REFERENCE_KIND_STILL: ReferenceKind
REFERENCE_KIND_MOVING: ReferenceKind
HARVEST_STATE_UNSPECIFIED: HarvestState
HARVEST_STATE_RUNNING: HarvestState
HARVEST_STATE_COMPLETE: HarvestState
HARVEST_STATE_FAILED: HarvestState

class ListReferencesRequest(_message.Message):
    __slots__ = ("kind", "min_sitelinks", "title_contains", "top_n", "with_images_only")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MIN_SITELINKS_FIELD_NUMBER: _ClassVar[int]
    TITLE_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    WITH_IMAGES_ONLY_FIELD_NUMBER: _ClassVar[int]
    kind: ReferenceKind
    min_sitelinks: int
    title_contains: str
    top_n: int
    with_images_only: bool
    def __init__(self, kind: _Optional[_Union[ReferenceKind, str]] = ..., min_sitelinks: _Optional[int] = ..., title_contains: _Optional[str] = ..., top_n: _Optional[int] = ..., with_images_only: _Optional[bool] = ...) -> None: ...

class ListReferencesResponse(_message.Message):
    __slots__ = ("reference",)
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    reference: Reference
    def __init__(self, reference: _Optional[_Union[Reference, _Mapping]] = ...) -> None: ...

class GetReferenceRequest(_message.Message):
    __slots__ = ("reference_id",)
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    def __init__(self, reference_id: _Optional[str] = ...) -> None: ...

class GetReferenceResponse(_message.Message):
    __slots__ = ("reference",)
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    reference: Reference
    def __init__(self, reference: _Optional[_Union[Reference, _Mapping]] = ...) -> None: ...

class StreamReferenceImagesRequest(_message.Message):
    __slots__ = ("reference_id",)
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    def __init__(self, reference_id: _Optional[str] = ...) -> None: ...

class StreamReferenceImagesResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: ReferenceImage
    def __init__(self, image: _Optional[_Union[ReferenceImage, _Mapping]] = ...) -> None: ...

class Covariates(_message.Message):
    __slots__ = ("sitelinks", "year", "same_title_catalog", "near_title_catalog", "same_title_export", "near_title_export", "caption_count")
    SITELINKS_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    SAME_TITLE_CATALOG_FIELD_NUMBER: _ClassVar[int]
    NEAR_TITLE_CATALOG_FIELD_NUMBER: _ClassVar[int]
    SAME_TITLE_EXPORT_FIELD_NUMBER: _ClassVar[int]
    NEAR_TITLE_EXPORT_FIELD_NUMBER: _ClassVar[int]
    CAPTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    sitelinks: int
    year: int
    same_title_catalog: int
    near_title_catalog: int
    same_title_export: int
    near_title_export: int
    caption_count: int
    def __init__(self, sitelinks: _Optional[int] = ..., year: _Optional[int] = ..., same_title_catalog: _Optional[int] = ..., near_title_catalog: _Optional[int] = ..., same_title_export: _Optional[int] = ..., near_title_export: _Optional[int] = ..., caption_count: _Optional[int] = ...) -> None: ...

class Reference(_message.Message):
    __slots__ = ("id", "slug", "title", "kind", "medium", "creator", "inception", "covariates", "imdb", "n_images", "labels", "depicts", "genres")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MEDIUM_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    INCEPTION_FIELD_NUMBER: _ClassVar[int]
    COVARIATES_FIELD_NUMBER: _ClassVar[int]
    IMDB_FIELD_NUMBER: _ClassVar[int]
    N_IMAGES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEPICTS_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    id: str
    slug: str
    title: str
    kind: ReferenceKind
    medium: str
    creator: str
    inception: str
    covariates: Covariates
    imdb: str
    n_images: int
    labels: _containers.ScalarMap[str, str]
    depicts: _containers.RepeatedScalarFieldContainer[str]
    genres: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., slug: _Optional[str] = ..., title: _Optional[str] = ..., kind: _Optional[_Union[ReferenceKind, str]] = ..., medium: _Optional[str] = ..., creator: _Optional[str] = ..., inception: _Optional[str] = ..., covariates: _Optional[_Union[Covariates, _Mapping]] = ..., imdb: _Optional[str] = ..., n_images: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., depicts: _Optional[_Iterable[str]] = ..., genres: _Optional[_Iterable[str]] = ...) -> None: ...

class ReferenceImage(_message.Message):
    __slots__ = ("reference_id", "position", "sha256", "source", "media_type", "width", "height", "data")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    position: int
    sha256: str
    source: str
    media_type: str
    width: int
    height: int
    data: bytes
    def __init__(self, reference_id: _Optional[str] = ..., position: _Optional[int] = ..., sha256: _Optional[str] = ..., source: _Optional[str] = ..., media_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ListPromptVariantsRequest(_message.Message):
    __slots__ = ("reference_id", "perturbation")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    PERTURBATION_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    perturbation: str
    def __init__(self, reference_id: _Optional[str] = ..., perturbation: _Optional[str] = ...) -> None: ...

class PromptVariant(_message.Message):
    __slots__ = ("reference_id", "perturbation", "text", "method")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    PERTURBATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    perturbation: str
    text: str
    method: str
    def __init__(self, reference_id: _Optional[str] = ..., perturbation: _Optional[str] = ..., text: _Optional[str] = ..., method: _Optional[str] = ...) -> None: ...

class ListPromptVariantsResponse(_message.Message):
    __slots__ = ("variants",)
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    variants: _containers.RepeatedCompositeFieldContainer[PromptVariant]
    def __init__(self, variants: _Optional[_Iterable[_Union[PromptVariant, _Mapping]]] = ...) -> None: ...

class StartHarvestRequest(_message.Message):
    __slots__ = ("offline", "config_yaml")
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_YAML_FIELD_NUMBER: _ClassVar[int]
    offline: OfflineHarvest
    config_yaml: str
    def __init__(self, offline: _Optional[_Union[OfflineHarvest, _Mapping]] = ..., config_yaml: _Optional[str] = ...) -> None: ...

class OfflineHarvest(_message.Message):
    __slots__ = ("catalog_file", "images_dir")
    CATALOG_FILE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_DIR_FIELD_NUMBER: _ClassVar[int]
    catalog_file: str
    images_dir: str
    def __init__(self, catalog_file: _Optional[str] = ..., images_dir: _Optional[str] = ...) -> None: ...

class StartHarvestResponse(_message.Message):
    __slots__ = ("harvest",)
    HARVEST_FIELD_NUMBER: _ClassVar[int]
    harvest: Harvest
    def __init__(self, harvest: _Optional[_Union[Harvest, _Mapping]] = ...) -> None: ...

class GetHarvestRequest(_message.Message):
    __slots__ = ("harvest_id",)
    HARVEST_ID_FIELD_NUMBER: _ClassVar[int]
    harvest_id: int
    def __init__(self, harvest_id: _Optional[int] = ...) -> None: ...

class GetHarvestResponse(_message.Message):
    __slots__ = ("harvest",)
    HARVEST_FIELD_NUMBER: _ClassVar[int]
    harvest: Harvest
    def __init__(self, harvest: _Optional[_Union[Harvest, _Mapping]] = ...) -> None: ...

class HarvestFailure(_message.Message):
    __slots__ = ("reference_id", "stage", "reason")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    stage: str
    reason: str
    def __init__(self, reference_id: _Optional[str] = ..., stage: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Harvest(_message.Message):
    __slots__ = ("harvest_id", "state", "source", "references", "images_stored", "failures", "error")
    HARVEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_STORED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    harvest_id: int
    state: HarvestState
    source: str
    references: int
    images_stored: int
    failures: _containers.RepeatedCompositeFieldContainer[HarvestFailure]
    error: str
    def __init__(self, harvest_id: _Optional[int] = ..., state: _Optional[_Union[HarvestState, str]] = ..., source: _Optional[str] = ..., references: _Optional[int] = ..., images_stored: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[HarvestFailure, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

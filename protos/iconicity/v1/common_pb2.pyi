from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Imagery(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGERY_UNSPECIFIED: _ClassVar[Imagery]
    IMAGERY_STATIC: _ClassVar[Imagery]
    IMAGERY_DYNAMIC: _ClassVar[Imagery]

class CrtVariant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CRT_VARIANT_UNSPECIFIED: _ClassVar[CrtVariant]
    CRT_VARIANT_RECOGNIZED_IMAGES: _ClassVar[CrtVariant]
    CRT_VARIANT_ALL_IMAGES: _ClassVar[CrtVariant]
IMAGERY_UNSPECIFIED: Imagery
IMAGERY_STATIC: Imagery
IMAGERY_DYNAMIC: Imagery
CRT_VARIANT_UNSPECIFIED: CrtVariant
CRT_VARIANT_RECOGNIZED_IMAGES: CrtVariant
CRT_VARIANT_ALL_IMAGES: CrtVariant

class Image(_message.Message):
    __slots__ = ("name", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

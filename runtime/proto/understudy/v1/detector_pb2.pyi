import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_FORMAT_UNSPECIFIED: _ClassVar[PixelFormat]
    PIXEL_FORMAT_BGR8: _ClassVar[PixelFormat]
    PIXEL_FORMAT_RGB8: _ClassVar[PixelFormat]
    PIXEL_FORMAT_GRAY8: _ClassVar[PixelFormat]

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]

class DropReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DROP_REASON_UNSPECIFIED: _ClassVar[DropReason]
    DROP_REASON_SUPERSEDED: _ClassVar[DropReason]
    DROP_REASON_BUDGET_EXCEEDED: _ClassVar[DropReason]
    DROP_REASON_QUEUE_FULL: _ClassVar[DropReason]
    DROP_REASON_SHUTTING_DOWN: _ClassVar[DropReason]
PIXEL_FORMAT_UNSPECIFIED: PixelFormat
PIXEL_FORMAT_BGR8: PixelFormat
PIXEL_FORMAT_RGB8: PixelFormat
PIXEL_FORMAT_GRAY8: PixelFormat
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
DROP_REASON_UNSPECIFIED: DropReason
DROP_REASON_SUPERSEDED: DropReason
DROP_REASON_BUDGET_EXCEEDED: DropReason
DROP_REASON_QUEUE_FULL: DropReason
DROP_REASON_SHUTTING_DOWN: DropReason

class EncodedImage(_message.Message):
    __slots__ = ("data", "format")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    format: ImageFormat
    def __init__(self, data: _Optional[bytes] = ..., format: _Optional[_Union[ImageFormat, str]] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("data", "width", "height", "pixel_format")
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    width: int
    height: int
    pixel_format: PixelFormat
    def __init__(self, data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., pixel_format: _Optional[_Union[PixelFormat, str]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("frame_id", "camera_id", "capture_time", "encoded", "raw", "budget_ms", "priority")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    camera_id: str
    capture_time: _timestamp_pb2.Timestamp
    encoded: EncodedImage
    raw: RawImage
    budget_ms: float
    priority: int
    def __init__(self, frame_id: _Optional[int] = ..., camera_id: _Optional[str] = ..., capture_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., encoded: _Optional[_Union[EncodedImage, _Mapping]] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ..., budget_ms: _Optional[float] = ..., priority: _Optional[int] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2", "score", "class_id", "label")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int
    label: str
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ..., score: _Optional[float] = ..., class_id: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("queue_ms", "decode_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "total_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    INFER_MS_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    decode_ms: float
    preprocess_ms: float
    infer_ms: float
    postprocess_ms: float
    total_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., preprocess_ms: _Optional[float] = ..., infer_ms: _Optional[float] = ..., postprocess_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("frame_id", "camera_id", "capture_time", "detections", "timings", "budget_ms", "budget_met", "image_width", "image_height", "batch_size", "capture_age_ms")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MET_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    camera_id: str
    capture_time: _timestamp_pb2.Timestamp
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    timings: StageTimings
    budget_ms: float
    budget_met: bool
    image_width: int
    image_height: int
    batch_size: int
    capture_age_ms: float
    def __init__(self, frame_id: _Optional[int] = ..., camera_id: _Optional[str] = ..., capture_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., budget_ms: _Optional[float] = ..., budget_met: _Optional[bool] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., batch_size: _Optional[int] = ..., capture_age_ms: _Optional[float] = ...) -> None: ...

class DropNotice(_message.Message):
    __slots__ = ("frame_id", "reason", "detail", "camera_id", "queue_ms")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    reason: DropReason
    detail: str
    camera_id: str
    queue_ms: float
    def __init__(self, frame_id: _Optional[int] = ..., reason: _Optional[_Union[DropReason, str]] = ..., detail: _Optional[str] = ..., camera_id: _Optional[str] = ..., queue_ms: _Optional[float] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("frame_id", "code", "message", "camera_id")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    code: int
    message: str
    camera_id: str
    def __init__(self, frame_id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., camera_id: _Optional[str] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("result", "dropped", "error")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: DetectResponse
    dropped: DropNotice
    error: FrameError
    def __init__(self, result: _Optional[_Union[DetectResponse, _Mapping]] = ..., dropped: _Optional[_Union[DropNotice, _Mapping]] = ..., error: _Optional[_Union[FrameError, _Mapping]] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("class_names", "input_height", "input_width", "backend", "precision", "model_hash", "student_latency_p50_ms", "student_latency_p99_ms", "teacher_latency_ms", "default_budget_ms", "budget_met", "budget_report", "max_batch", "preset", "server_version", "policy", "shadow")
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    STUDENT_LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MET_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REPORT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    input_height: int
    input_width: int
    backend: str
    precision: str
    model_hash: str
    student_latency_p50_ms: float
    student_latency_p99_ms: float
    teacher_latency_ms: float
    default_budget_ms: float
    budget_met: bool
    budget_report: str
    max_batch: int
    preset: str
    server_version: str
    policy: str
    shadow: ShadowReport
    def __init__(self, class_names: _Optional[_Iterable[str]] = ..., input_height: _Optional[int] = ..., input_width: _Optional[int] = ..., backend: _Optional[str] = ..., precision: _Optional[str] = ..., model_hash: _Optional[str] = ..., student_latency_p50_ms: _Optional[float] = ..., student_latency_p99_ms: _Optional[float] = ..., teacher_latency_ms: _Optional[float] = ..., default_budget_ms: _Optional[float] = ..., budget_met: _Optional[bool] = ..., budget_report: _Optional[str] = ..., max_batch: _Optional[int] = ..., preset: _Optional[str] = ..., server_version: _Optional[str] = ..., policy: _Optional[str] = ..., shadow: _Optional[_Union[ShadowReport, _Mapping]] = ...) -> None: ...

class ClassAgreement(_message.Message):
    __slots__ = ("class_id", "label", "true_positives", "false_positives", "false_negatives", "precision", "recall")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TRUE_POSITIVES_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVES_FIELD_NUMBER: _ClassVar[int]
    FALSE_NEGATIVES_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., true_positives: _Optional[int] = ..., false_positives: _Optional[int] = ..., false_negatives: _Optional[int] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ...) -> None: ...

class ShadowReport(_message.Message):
    __slots__ = ("teacher", "every", "iou_threshold", "frames_compared", "frames_skipped", "frames_saved", "teacher_latency_p50_ms", "precision", "recall", "classes")
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    EVERY_FIELD_NUMBER: _ClassVar[int]
    IOU_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FRAMES_COMPARED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SAVED_FIELD_NUMBER: _ClassVar[int]
    TEACHER_LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    teacher: str
    every: int
    iou_threshold: float
    frames_compared: int
    frames_skipped: int
    frames_saved: int
    teacher_latency_p50_ms: float
    precision: float
    recall: float
    classes: _containers.RepeatedCompositeFieldContainer[ClassAgreement]
    def __init__(self, teacher: _Optional[str] = ..., every: _Optional[int] = ..., iou_threshold: _Optional[float] = ..., frames_compared: _Optional[int] = ..., frames_skipped: _Optional[int] = ..., frames_saved: _Optional[int] = ..., teacher_latency_p50_ms: _Optional[float] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., classes: _Optional[_Iterable[_Union[ClassAgreement, _Mapping]]] = ...) -> None: ...

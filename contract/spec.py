"""The job spec, as producers validate it and workers check it again.

The ``tasks`` block takes the shape of Immich's machine-learning request
(``{task: {type: {modelName, options}}}``), so a server that already builds
those requests can enqueue them. Every option is typed and unknown keys are
rejected, so a typo names the field instead of being ignored.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from contract.errors import SpecError
from contract.names import ModelType, Status, Task

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@=+-]{0,199}$"
BatchId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
AssetId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
Score = Annotated[float, Field(ge=0.0, le=1.0)]

MAX_ASSETS = 100_000
MAX_INLINE_BYTES = 2 * 1024 * 1024
MAX_CLASSES = 2_000
MAX_EXAMPLES_PER_CLASS = 100
MAX_EXAMPLES_TOTAL = 5_000  # a cache miss embeds every example: keep it well inside the time limit
MAX_EXAMPLE_CHARS = 300


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# --- per-model options ------------------------------------------------------------


class FaceDetectionOptions(_Strict):
    min_score: Score = Field(0.7, alias="minScore", description="Drop faces scored below this.")


class FaceRecognitionOptions(_Strict):
    # Immich puts minScore on recognition; it filters the detected faces too.
    min_score: Score | None = Field(None, alias="minScore")


class TextDetectionOptions(_Strict):
    min_score: Score = Field(0.5, alias="minScore", description="Drop text boxes whose box score is below this.")
    max_resolution: int = Field(736, alias="maxResolution", ge=32, le=4096, description="Long side for detection.")


class TextRecognitionOptions(_Strict):
    min_score: Score = Field(0.8, alias="minScore", description="Drop lines recognised with lower confidence.")


class TextClassificationOptions(_Strict):
    min_score: Score = Field(0.9, alias="minScore", description="Flip a line when P(upside down) is at least this.")


class NoOptions(_Strict):
    pass


class FaceDetectionEntry(_Strict):
    model_name: ModelName = Field(alias="modelName")
    options: FaceDetectionOptions = FaceDetectionOptions()


class FaceRecognitionEntry(_Strict):
    model_name: ModelName = Field(alias="modelName")
    options: FaceRecognitionOptions = FaceRecognitionOptions()


class TextDetectionEntry(_Strict):
    model_name: ModelName = Field(alias="modelName")
    options: TextDetectionOptions = TextDetectionOptions()


class TextRecognitionEntry(_Strict):
    model_name: ModelName = Field(alias="modelName")
    options: TextRecognitionOptions = TextRecognitionOptions()


class TextClassificationEntry(_Strict):
    model_name: ModelName = Field(alias="modelName")
    options: TextClassificationOptions = TextClassificationOptions()


class PlainEntry(_Strict):
    model_name: ModelName = Field(alias="modelName")
    options: NoOptions = NoOptions()


class TextualEntry(_Strict):
    model_name: ModelName = Field(alias="modelName")
    options: dict[str, Any] = Field(default_factory=dict)


# --- tasks ---------------------------------------------------------------------------


class FacialRecognitionTask(_Strict):
    detection: FaceDetectionEntry
    recognition: FaceRecognitionEntry | None = None


class OcrTask(_Strict):
    detection: TextDetectionEntry
    classification: TextClassificationEntry | None = Field(None, description="Optional text-line orientation step.")
    recognition: TextRecognitionEntry | None = None


class ClipTask(_Strict):
    visual: PlainEntry | None = None
    textual: TextualEntry | None = None

    @model_validator(mode="after")
    def _image_jobs_only(self) -> ClipTask:
        # Immich's rule: a request is visual or textual, never both; assetq jobs are images.
        if self.textual is not None:
            raise ValueError("a 'textual' entry embeds text, not images; assetq jobs take images: use 'visual'")
        if self.visual is None:
            raise ValueError("'clip' needs a 'visual' entry")
        return self


NonEmptyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_EXAMPLE_CHARS)]


class ClassExamples(_Strict):
    positive: list[NonEmptyText] = Field(min_length=1, max_length=MAX_EXAMPLES_PER_CLASS)
    negative: list[NonEmptyText] = Field(default_factory=list, max_length=MAX_EXAMPLES_PER_CLASS)

    @model_validator(mode="after")
    def _disjoint(self) -> ClassExamples:
        both = sorted(set(self.positive) & set(self.negative))
        if both:
            raise ValueError(f"{both[0]!r} is both a positive and a negative example: the class could never win")
        return self


class ZeroShotOptions(_Strict):
    min_score: float | None = Field(None, alias="minScore", ge=-1.0, le=1.0)
    top_k: int | None = Field(None, alias="topK", ge=1, le=MAX_CLASSES)


ClassName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ZeroShotTask(_Strict):
    model_name: ModelName = Field(alias="modelName")
    classes: dict[ClassName, ClassExamples] = Field(min_length=1, max_length=MAX_CLASSES)
    options: ZeroShotOptions = ZeroShotOptions()

    @field_validator("classes")
    @classmethod
    def _bounded(cls, classes: dict[str, ClassExamples]) -> dict[str, ClassExamples]:
        total = sum(len(c.positive) + len(c.negative) for c in classes.values())
        if total > MAX_EXAMPLES_TOTAL:
            raise ValueError(f"{total} text examples in all; at most {MAX_EXAMPLES_TOTAL} are allowed")
        return classes


class Tasks(_Strict):
    facial_recognition: FacialRecognitionTask | None = Field(None, alias=Task.FACIAL_RECOGNITION.value)
    ocr: OcrTask | None = Field(None, alias=Task.OCR.value)
    clip: ClipTask | None = Field(None, alias=Task.CLIP.value)
    zero_shot: ZeroShotTask | None = Field(None, alias=Task.ZERO_SHOT.value)

    @model_validator(mode="after")
    def _not_empty(self) -> Tasks:
        if not any((self.facial_recognition, self.ocr, self.clip, self.zero_shot)):
            raise ValueError("no task requested: give at least one of facial-recognition, ocr, clip, zero-shot")
        if (
            self.zero_shot
            and self.clip
            and self.clip.visual
            and self.clip.visual.model_name != self.zero_shot.model_name
        ):
            raise ValueError("zero-shot and clip.visual must use the same modelName (zero-shot reuses its embedding)")
        return self

    def steps(self, with_options: bool = True) -> list[tuple[Task, ModelType, str, dict[str, Any]]]:
        """Every requested model step as ``(task, type, modelName, options)`` with options by their JSON names.

        ``with_options=False`` leaves the options empty: checking models at submit needs only the names,
        and dumping a 12-class zero-shot job's classes cost every submit ~16 µs (~4% of it) for nothing.
        """
        opts: Callable[[BaseModel], dict[str, Any]] = _opts if with_options else (lambda _: {})
        out: list[tuple[Task, ModelType, str, dict[str, Any]]] = []
        fr = self.facial_recognition
        if fr:
            out.append(
                (Task.FACIAL_RECOGNITION, ModelType.DETECTION, fr.detection.model_name, opts(fr.detection.options))
            )
            if fr.recognition:
                rec = fr.recognition
                out.append((Task.FACIAL_RECOGNITION, ModelType.RECOGNITION, rec.model_name, opts(rec.options)))
        if self.ocr:
            o = self.ocr
            out.append((Task.OCR, ModelType.DETECTION, o.detection.model_name, opts(o.detection.options)))
            if o.classification:
                cls = o.classification
                out.append((Task.OCR, ModelType.CLASSIFICATION, cls.model_name, opts(cls.options)))
            if o.recognition:
                out.append((Task.OCR, ModelType.RECOGNITION, o.recognition.model_name, opts(o.recognition.options)))
        if self.clip and self.clip.visual:
            out.append((Task.CLIP, ModelType.VISUAL, self.clip.visual.model_name, {}))
        if self.zero_shot:
            zs = self.zero_shot
            if not (self.clip and self.clip.visual):
                out.append((Task.CLIP, ModelType.VISUAL, zs.model_name, {}))  # zero-shot reads its embedding
            options = opts(zs.options)
            if with_options:
                options["classes"] = {name: c.model_dump() for name, c in zs.classes.items()}
            out.append((Task.ZERO_SHOT, ModelType.CLASSIFIER, zs.model_name, options))
        return out

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _opts(options: BaseModel) -> dict[str, Any]:
    return options.model_dump(by_alias=True, exclude_none=True)


# --- assets and outputs ------------------------------------------------------------


class Asset(_Strict):
    id: AssetId
    uri: str | None = Field(None, description="file:///abs/path or s3://bucket/key")
    data: str | None = Field(None, description="base64 image bytes, for small images")

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        if uri is None:
            return None
        if uri.startswith("file://"):
            if not uri[len("file://") :].startswith("/"):
                raise ValueError("file:// URIs must hold an absolute path (file:///...)")
        elif uri.startswith("s3://"):
            if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+", uri):
                raise ValueError("s3 URIs look like s3://bucket/key")
        else:
            raise ValueError("only file:// and s3:// URIs are accepted")
        return uri

    @field_validator("data")
    @classmethod
    def _small_base64(cls, data: str | None) -> str | None:
        if data is None:
            return None
        if len(data) > MAX_INLINE_BYTES * 4 // 3 + 4:
            raise ValueError(f"inline data is limited to {MAX_INLINE_BYTES} bytes; use a uri")
        try:
            base64.b64decode(data, validate=True)
        except ValueError as e:
            raise ValueError("data must be valid base64") from e
        return data

    @model_validator(mode="after")
    def _one_source(self) -> Asset:
        if (self.uri is None) == (self.data is None):
            raise ValueError("give exactly one of 'uri' or 'data'")
        return self


class S3Output(_Strict):
    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: str = "assetq/"


class Output(_Strict):
    redis: bool = True
    s3: S3Output | None = None


class JobSpec(_Strict):
    batch_id: BatchId | None = None
    assets: list[Asset] = Field(min_length=1, max_length=MAX_ASSETS)
    tasks: Tasks
    output: Output = Output()
    priority: int = Field(5, ge=0, le=9)

    @field_validator("assets")
    @classmethod
    def _unique_ids(cls, assets: list[Asset]) -> list[Asset]:
        seen: set[str] = set()
        dups = {a.id for a in assets if a.id in seen or seen.add(a.id)}  # type: ignore[func-returns-value]
        if dups:
            raise ValueError(f"asset ids must be unique; repeated: {', '.join(sorted(dups)[:10])}")
        return assets

    def with_batch_id(self) -> JobSpec:
        return self if self.batch_id else self.model_copy(update={"batch_id": new_batch_id()})


def new_batch_id() -> str:
    return uuid.uuid4().hex


__all__ = ["Catalog", "JobSpec", "SpecError", "Status", "Tasks", "check_models", "parse_spec", "parse_tasks"]


def parse_spec(data: Any) -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError.from_validation(e) from None


def parse_tasks(data: Any) -> Tasks:
    try:
        return Tasks.model_validate(data)
    except ValidationError as e:
        raise SpecError.from_validation(e, prefix="tasks.") from None


Catalog = dict[str, dict[str, set[str]]]  # task -> type -> installed model names


def check_models(tasks: Tasks, catalog: Catalog) -> None:
    """Reject steps whose model is not installed, naming what is."""
    errors = []
    for task, type_, name, _ in tasks.steps(with_options=False):
        task_dir: Task = task
        if task == Task.ZERO_SHOT:
            type_, task_dir = ModelType.TEXTUAL, Task.CLIP  # zero-shot runs on the CLIP pack's text tower
        have = catalog.get(task_dir, {}).get(type_, set())
        if name not in have:
            listed = ", ".join(sorted(have)) or "none"
            field = f"tasks.{task}.modelName" if task == Task.ZERO_SHOT else f"tasks.{task}.{type_}.modelName"
            errors.append((field, f"model {name!r} is not installed for {task_dir}/{type_}; installed: {listed}"))
    if errors:
        raise SpecError(errors)

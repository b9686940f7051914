"""All assetq settings in one place.

Every field can be set from the environment as ``ASSETQ_<FIELD>`` (upper case),
or from a ``.env`` file in the working directory. Celery's own settings are
derived from these in ``worker/app.py`` so the two never disagree.
"""

from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The photo formats the decoder opens (worker/pipeline/image.py), by the names their files usually carry.
IMAGE_EXTENSIONS = (
    *(".jpg", ".jpeg", ".jpe", ".jfif", ".mpo"),  # JPEG, and MPO (multi-picture JPEG) which opens as one
    *(".png", ".apng", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".avif"),
)


def _default_model_dir() -> Path:
    return Path.home() / ".cache" / "assetq" / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASSETQ_", env_file=".env", extra="ignore")

    # --- Redis: broker, batch state, results ---------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Broker and result store: redis://, rediss://, or Redis Sentinel as "
        "sentinel://[:password@]host:port[/db];sentinel://host2:port;... (the password is the master's).",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker: redis:// or sentinel:// (defaults to redis_url) or amqp:// (RabbitMQ, "
        "quorum queues).",
    )
    redis_sentinel_master: str = Field(
        "mymaster", description="With a sentinel:// URL: the master name the sentinels monitor."
    )
    redis_sentinel_password: SecretStr | None = Field(
        None, description="With a sentinel:// URL: the sentinels' own password (requirepass in sentinel.conf)."
    )
    redis_replica_acks: int | None = Field(
        None,
        ge=0,
        description="Replicas that must acknowledge a submitted batch (Redis WAIT) before submit returns; "
        "unset: 1 with a sentinel:// URL, 0 (no wait) otherwise.",
    )
    redis_replica_ack_timeout_ms: int = Field(
        2000, ge=1, description="How long submit waits for those replica acknowledgements before it fails."
    )
    broker_consumer_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="RabbitMQ's consumer_timeout (its default: 30 min). With an amqp:// broker, time_limit_s must "
        "stay below it, or the broker closes the channel of a chunk still running.",
    )
    result_ttl_s: int = Field(7 * 24 * 3600, description="Expiry of per-asset results and batch records in Redis.")
    results_stream: str = Field("assetq:results", description="Redis stream every finished asset is appended to.")
    results_stream_maxlen: int = Field(1_000_000, description="Approximate cap on the results stream length.")

    # --- S3 results sink (standard boto3 credential chain) ---------------------
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, moto); None means AWS.")
    s3_bucket: str | None = Field(None, description="Default bucket for results; None disables the S3 sink.")
    s3_prefix: str = Field("assetq/", description="Key prefix for results: <prefix><batch>/<asset>.json.")
    s3_region: str | None = Field(None, description="Region for the S3 client.")
    s3_access_key_id: SecretStr | None = Field(None, description="Overrides the boto3 chain when set.")
    s3_secret_access_key: SecretStr | None = Field(None, description="Overrides the boto3 chain when set.")
    s3_connect_timeout_s: float = Field(5.0, description="S3 connect timeout.")
    s3_read_timeout_s: float = Field(30.0, description="S3 read timeout.")

    result_dir: Path | None = Field(
        None, description="Also write <dir>/<batch>/<asset>.json on the worker (None = off)."
    )

    # --- models ------------------------------------------------------------
    model_dir: Path = Field(
        default_factory=_default_model_dir, description="Model root: <task>/<modelName>/<type>/model.onnx."
    )
    model_ttl_s: int = Field(600, description="Unload a model idle for this long (0 = never).")
    preload: bool | list[str] = Field(
        False,
        description="What a worker process loads and warms when it starts: false (nothing: each model loads on "
        "first use and then stays warm, so a process holds only what its jobs need), true (every installed "
        "model), or a JSON list of tasks and model names, e.g. '[\"facial-recognition\"]' or '[\"buffalo_s\"]'. "
        "assetq serve warms its CLIP text towers in any case (those a list names, else all).",
    )
    warmup: bool = Field(
        True,
        description="Run one dummy batch after loading a model (`assetq run` skips it unless this is set: its "
        "first images follow at once).",
    )

    zero_shot_cache_entries: int = Field(16, ge=1, description="Class configs whose text embeddings a worker keeps.")

    # --- device and runtime --------------------------------------------------
    device: str = Field("cpu", description="'cpu' or a CUDA device index; workers set it from --device.")
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="onnxruntime intra-op threads per session call (0 = auto: the process's share of the cores "
        "over its inference threads; one process with one inference thread: onnxruntime's default, every core).",
    )
    inference_threads: int = Field(
        1,
        ge=0,
        description="Threads of one worker process that run a chunk's waves at once on its shared sessions, each "
        "call on one onnxruntime thread (0 = auto: on the CPU one per core of the process's share, on a GPU 1). "
        "For jobs of per-image models (faces) set it to the cores: 1.07-1.11x one call at a time on every core. "
        "Not for the full job: CLIP's 16-image wave fills a chunk, so one thread would run it on one core (0.62x).",
    )
    inter_op_threads: int = Field(1, description="onnxruntime inter-op threads.")
    gpu_mem_limit_mb: int = Field(0, description="CUDA arena limit per session (0 = unlimited).")
    cuda_arena_extend_strategy: str = Field("kSameAsRequested", description="CUDA arena growth strategy.")
    intra_op_spinning: bool = Field(
        False,
        description="Let onnxruntime's intra-op threads spin between operators instead of sleeping. Off, they "
        "leave the cores to the decode threads running beside inference: the faces job streaming image by image "
        "in one process x 2 threads ran 1.2-1.7x faster with it off.",
    )
    denormal_as_zero: bool = Field(
        True, description="Flush subnormal floats to zero where a model is verified unaffected."
    )

    # --- batching ---------------------------------------------------------------
    chunk_size: int = Field(
        16,
        description="Max assets per task (one chunk is decoded and batched together). With several worker "
        "processes a batch's last chunks are cut smaller, down to one asset, so no process idles at its end.",
    )
    face_batch_size: int = Field(
        0,
        ge=0,
        description="Max faces per recognition batch (0 = auto: on the CPU 1 where each session call runs on one "
        "thread -- batches of 8 ran 7-9% slower per face there and held ~60 MiB more per process -- and 8 where "
        "calls use several threads (25% faster per face than 1 on 2 threads); 32 on a GPU).",
    )
    text_batch_size: int = Field(32, description="Max text lines per recognition batch.")
    clip_batch_size: int = Field(16, description="Max images per CLIP visual batch.")
    detection_batch_size: int = Field(
        0,
        ge=0,
        description="Max images per detection batch (0 = auto: 1 on the CPU, where a batch only costs memory "
        "-- ~120 MiB per process for 8 canvases at the same speed --, 8 on a GPU).",
    )

    # --- images -------------------------------------------------------------
    # Pillow itself refuses past 2 x Image.MAX_IMAGE_PIXELS (~179 MP), so that is the ceiling here.
    max_image_pixels: int = Field(
        50_000_000, le=178_956_970, description="Refuse images larger than this many pixels (decompression bombs)."
    )
    # 0: faces are aligned from the pixels Immich ML aligns them from (a full-size decode), so embeddings
    # match its own on camera originals too; a full-size 12 MP JPEG decodes in ~26 ms (worker/pipeline/jpeg.py).
    detail_side: int = Field(
        0,
        ge=0,
        description="Short side a JPEG keeps when decoded for steps that read fine detail (face alignment, text "
        "lines); 0 = full size (the default: face embeddings of big originals match a full-size "
        "decode, as Immich ML's). A value such as 1440 DCT-scales larger JPEGs down to no less than it: less "
        "decode time and memory, embeddings of 12 MP originals within cosine 0.98 of a full-size decode "
        "(README, Performance).",
    )
    max_image_side: int = Field(65_535, ge=1, description="Refuse images whose longer side exceeds this (long strips).")
    max_image_bytes: int = Field(200 * 1024 * 1024, description="Refuse encoded files larger than this.")
    allowed_roots: list[Path] = Field(
        default_factory=list,
        description="Workers read file:// URIs only inside these (JSON list); empty = none. "
        "`assetq run` reads the paths it is given.",
    )
    image_extensions: list[str] = Field(
        default_factory=lambda: list(IMAGE_EXTENSIONS),
        description="A folder given to `assetq run`, `submit` or `classify` expands to the files with these "
        "extensions (JSON list, any case); a file named on its own is read whatever its name.",
    )

    # --- worker behaviour -------------------------------------------------------
    queue: str = Field("assetq", description="Queue producers send to and every worker consumes.")
    gpu_queue: str = Field("gpu", description="Extra queue GPU-pinned workers also consume (for GPU-only jobs).")
    concurrency: int = Field(1, ge=1, description="Worker pool processes per device; `assetq run`'s processes.")
    soft_time_limit_s: int = Field(600, description="Soft time limit per chunk task.")
    time_limit_s: int = Field(660, description="Hard time limit per chunk task (kills the pool child).")
    asset_time_limit_s: float = Field(60.0, description="Per-asset fetch+decode time limit.")
    max_retries: int = Field(5, description="Retries for transient errors.")
    retry_backoff_s: float = Field(2.0, description="First retry delay; doubles each try, with jitter.")
    retry_backoff_max_s: float = Field(120.0, description="Cap on the retry delay.")
    max_deliveries: int = Field(
        3,
        description="Deliveries a chunk may take without finishing (its worker died) before it is split "
        "into one-asset chunks, and a one-asset chunk dead-lettered as poison.",
    )
    worker_dead_after_s: float = Field(
        30.0,
        gt=3,
        description="A worker process whose heartbeat is older than this is dead: any live worker puts what it "
        "held back at the front of its queues (at once, on the same machine, when the process is gone).",
    )
    worker_lost_wait_s: float = Field(
        10.0,
        description="After a pool process dies, wait this long for a result it may have sent before "
        "requeueing its task (Celery's worker_lost_wait).",
    )
    worker_max_tasks_per_child: int = Field(0, description="Recycle pool children after N tasks (0 = never).")

    # --- flower -------------------------------------------------------------
    flower_basic_auth: SecretStr | None = Field(None, description="user:password for Flower's basic auth.")
    flower_port: int = Field(5555, description="Flower HTTP port.")

    # --- assetq serve: the HTTP API and Immich's machine-learning endpoint ------------------
    interactive_queue: str = Field(
        "assetq.interactive",
        description="Queue of interactive chunks (`/predict`); every worker takes from it before any other queue.",
    )
    api_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens `assetq serve` accepts (JSON list, e.g. '[\"s3cret\"]'); "
        "it refuses to start without one unless given --no-auth.",
    )
    api_host: str = Field("127.0.0.1", description="Address `assetq serve` listens on.")
    api_port: int = Field(3003, description="Port of `assetq serve` (3003 is Immich's machine-learning port).")
    api_workers: int = Field(1, ge=1, description="Server processes of `assetq serve`.")
    api_predict_auth: bool = Field(
        False, description="Require a bearer token on `/ping` and `/predict` too (Immich's server sends none)."
    )
    api_predict_timeout_s: float = Field(
        60.0, gt=0, description="How long a `/predict` image request waits for its result before a 504."
    )
    api_predict_window_ms: float = Field(
        10.0,
        ge=0,
        description="`/predict` image requests for the same tasks arriving within this window "
        "are sent together: a chunk per live pool process while there are enough, each of at most "
        "ASSETQ_CHUNK_SIZE images.",
    )
    api_body_timeout_s: float = Field(
        30.0, gt=0, description="A client that takes longer to send its request body gets a 408."
    )
    api_max_request_bytes: int = Field(
        64 * 1024 * 1024,
        description="Largest request body `assetq serve` reads (a `/predict` upload: ASSETQ_MAX_IMAGE_BYTES).",
    )

    @field_validator("image_extensions")
    @classmethod
    def _dotted_lower_case(cls, extensions: list[str]) -> list[str]:
        # Compared with a file's lower-cased suffix: "JPG", "jpg" and ".jpg" all mean ".jpg".
        dotted = ("." + e.strip().lower().lstrip(".") for e in extensions if e.strip().strip("."))
        return list(dict.fromkeys(dotted))

    @model_validator(mode="after")
    def _time_limits_nest(self) -> Settings:
        # The soft limit must fire before the hard one kills the pool process.
        if not self.soft_time_limit_s < self.time_limit_s:
            raise ValueError("need soft_time_limit_s < time_limit_s")
        # RabbitMQ closes the channel of a delivery unacknowledged for longer than its consumer_timeout:
        # a chunk must hit the hard time limit first (tests/test_rabbitmq_faults.py shows the other case).
        scheme = self.broker.split("://", 1)[0].lower()
        if scheme in ("amqp", "amqps", "pyamqp") and not self.time_limit_s < self.broker_consumer_timeout_s:
            raise ValueError("with a RabbitMQ broker, need time_limit_s < broker_consumer_timeout_s")
        return self

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def replica_acks(self) -> int:
        """Replicas a submit waits for: ``redis_replica_acks``, else 1 behind Sentinel (which implies one)."""
        if self.redis_replica_acks is not None:
            return self.redis_replica_acks
        return 1 if self.redis_url.lower().startswith("sentinel://") else 0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def default_of(name: str) -> Any:
    """The default of setting ``name`` as declared above (the environment plays no part)."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


# What a batch setting of 0 ("auto") means: on a GPU, which needs batches to be busy; on the CPU with
# several intra-op threads per session call; on the CPU with one. A batch of 8 detector canvases runs no
# faster than 1 and holds ~120 MiB more per process; faces spread over several threads need a batch (8
# ran 25% faster per face than 1 on 2 threads), while one thread runs them fastest one at a time, from
# its cache (8 ran 7-9% slower per face and held ~60 MiB more).
AUTO_BATCH: dict[str, dict[str, int]] = {
    "detection_batch_size": {"gpu": 8, "cpu": 1, "cpu-1-thread": 1},
    "face_batch_size": {"gpu": 32, "cpu": 8, "cpu-1-thread": 1},
}


def batch_size_for(name: str, value: int, device: str = "cpu", intra_op_threads: int = 0) -> int:
    """Batch setting ``name`` at ``value`` on ``device`` ('cpu' or a GPU index), each session call on
    ``intra_op_threads`` threads (0: onnxruntime's own, every core): 0 resolved by ``AUTO_BATCH``."""
    if value == 0 and name in AUTO_BATCH:
        kind = "gpu" if device != "cpu" else "cpu-1-thread" if intra_op_threads == 1 else "cpu"
        return AUTO_BATCH[name][kind]
    return value


def cpu_cores() -> int:
    """The cores this process may run on (its affinity: a container's cpuset, ``taskset``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def process_threads(
    inference_threads: int, intra_op_threads: int, concurrency: int = 1, device: str = "cpu"
) -> tuple[int, int]:
    """(inference threads, onnxruntime intra-op threads) of one worker process, each 0 ("auto") resolved.

    On the CPU a process's share of the cores (all of them over ``concurrency`` processes) is run as
    that many inference threads of one intra-op thread each, unless either is set: a set intra-op
    count divides the share, a set inference count gets the share divided among its threads. An
    intra-op count of 0 is left to onnxruntime (every core) only where one thread runs inference.
    Several processes get their share as intra-op threads, not onnxruntime's every core each.
    A GPU runs one session call at a time anyway: one inference thread.
    """
    cores = cpu_cores()
    share = max(1, cores // max(1, concurrency))
    if device != "cpu":
        return max(1, inference_threads or 1), intra_op_threads
    lanes = inference_threads or max(1, share // max(1, intra_op_threads))
    if intra_op_threads or (lanes == 1 and share == cores):
        return lanes, intra_op_threads
    return lanes, max(1, share // lanes)


def threads_of(settings: Settings) -> tuple[int, int]:
    """``process_threads`` for a worker process at ``settings``."""
    return process_threads(settings.inference_threads, settings.intra_op_threads, settings.concurrency, settings.device)


# The dataclass-field metadata key naming the setting a field mirrors.
MIRRORED_SETTING = "assetq_setting"

_Mirror = TypeVar("_Mirror")


def mirrored(name: str) -> Any:
    """A dataclass field that mirrors setting ``name``: its default is that setting's, ``from_settings`` copies it.

    Worker-side option bundles (the pipeline's ``Limits``, the models' ``RuntimeOptions``)
    are built from their fields this way, so a default is written once, above.
    """
    return dataclasses.field(default=default_of(name), metadata={MIRRORED_SETTING: name})


def from_settings(cls: type[_Mirror], settings: Settings, **overrides: Any) -> _Mirror:
    """An instance of the dataclass ``cls`` whose ``mirrored`` fields hold ``settings``' values."""
    values = {
        f.name: getattr(settings, f.metadata[MIRRORED_SETTING])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if MIRRORED_SETTING in f.metadata
    }
    return cls(**{**values, **overrides})

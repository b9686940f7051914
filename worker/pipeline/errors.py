"""Errors the pipeline turns into per-asset records."""

from __future__ import annotations

# Every ``AssetError.kind`` the fetch/decode layer and the pipeline produce, with
# what it means. Result consumers may branch on these names: they are API.
ERROR_KINDS: dict[str, str] = {
    # fetch (worker/pipeline/fetch.py)
    "invalid_uri": "the URI is malformed: relative or NUL-containing path, file:// with a host, no bucket or key",
    "unsupported_uri": "a scheme other than file:// and s3://, or s3:// with no S3 client configured",
    "invalid_data": "inline data is not valid base64",
    "outside_roots": "a file:// path that resolves (symlinks and .. followed) outside the allowed roots",
    "not_found": "no such file, S3 key or bucket",
    "not_a_file": "the path is a directory, FIFO, device or socket",
    "symlink_loop": "the path runs into a symlink loop",
    "access_denied": "permission denied (file mode, S3 policy or credentials)",
    "archived": "the S3 object is in an archive storage class and must be restored first",
    # fetch or decode
    "too_large": "more bytes, pixels or pixels per side than the limits allow, or a metadata bomb",
    # decode (worker/pipeline/image.py)
    "empty": "zero bytes",
    "unsupported_format": "the content is not an image in a decodable format (the file name is never used)",
    "corrupt": "an image format whose data cannot be decoded",
    "truncated": "image data that ends before the image does",
    "invalid_dimensions": "a header declaring a zero or negative size",
    # pipeline (worker/pipeline/run.py)
    "timeout": "fetch + decode took longer than the per-asset time limit",
    "invalid_spec": "the job's tasks block is invalid",
}


class AssetError(Exception):
    """A permanent, per-asset problem: the asset becomes a ``skipped`` record.

    ``kind`` is a short machine-readable reason, one of :data:`ERROR_KINDS`
    (``empty``, ``truncated``, ``corrupt``, ``unsupported_format``,
    ``too_large``, ``not_found``, ``access_denied``, ``outside_roots`` ...).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


class TransientError(Exception):
    """A failure that may pass (storage unreachable, timeout, device OOM): retry the task."""

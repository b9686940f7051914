"""Fetch an asset's bytes: inline data, a file inside the allowed roots, or an S3 object.

Permanent problems (a missing file, a path outside the roots, a missing S3
key, a denied read) raise :class:`AssetError`; storage that may come back
(S3 unreachable or throttling, an I/O error) raises :class:`TransientError`
so the chunk is retried. Nothing else escapes :meth:`Fetcher.fetch`.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from worker.pipeline.errors import AssetError, TransientError

S3ClientFactory = Callable[[], Any]

# S3 error codes that no retry will fix, by the AssetError kind they become.
_S3_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_S3_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "AccountProblem",
}
_S3_ARCHIVED = {"InvalidObjectState"}  # Glacier / Deep Archive object not restored

# Where Linux shows the path an open file descriptor really refers to.
_PROC_FD = Path("/proc/self/fd")


class Fetcher:
    """``allowed_roots``: ``file://`` paths must resolve (symlinks followed) inside one of them.

    ``None`` allows any local path (``assetq run`` over paths the user named);
    an empty list allows none. The check is made on the resolved path before
    opening and again, on Linux, on the file actually opened, so swapping a
    directory for a symlink between the two cannot escape the roots.
    """

    def __init__(
        self, allowed_roots: Sequence[Path] | None, max_bytes: int, s3_client: S3ClientFactory | None = None
    ) -> None:
        self.roots = None if allowed_roots is None else [Path(os.path.realpath(r)) for r in allowed_roots]
        self.max_bytes = max_bytes
        self._s3_factory = s3_client
        self._s3: Any = None
        self._s3_lock = threading.Lock()  # decode threads share one client; create it once

    def fetch(self, asset: dict[str, Any]) -> bytes:
        if asset.get("data") is not None:
            return self._inline(asset["data"])
        uri = asset.get("uri")
        if not isinstance(uri, str) or not uri:
            raise AssetError("invalid_uri", f"asset has no data and no usable uri: {uri!r}")
        if uri.startswith("file://"):
            return self._file(_file_path(uri))
        if uri.startswith("s3://"):
            return self._s3_object(uri)
        raise AssetError("unsupported_uri", f"cannot fetch {uri[:200]!r}: only file:// and s3:// are supported")

    # -- inline --------------------------------------------------------------------------
    def _inline(self, data: Any) -> bytes:
        if not isinstance(data, (str, bytes)):
            raise AssetError("invalid_data", f"inline data must be a base64 string, not {type(data).__name__}")
        approx_bytes = len(data) * 3 // 4
        if approx_bytes > self.max_bytes:
            raise AssetError("too_large", f"inline data has about {approx_bytes} bytes, limit is {self.max_bytes}")
        try:
            return base64.b64decode(data)
        except (binascii.Error, ValueError) as e:
            raise AssetError("invalid_data", f"inline data is not valid base64: {e}") from e

    # -- file:// ---------------------------------------------------------------------------
    def _file(self, raw_path: str) -> bytes:
        path = os.path.realpath(raw_path)
        self._check_inside_roots(path, raw_path)
        try:
            # O_NOFOLLOW: the resolved path has no symlink left, so one here was swapped in since.
            # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below anyway).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise _file_error(e, raw_path) from e
        try:
            self._check_opened_inside_roots(fd, raw_path)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):  # checked before reading: a directory or FIFO cannot be read
                raise AssetError("not_a_file", f"{raw_path} is not a regular file")
            if info.st_size > self.max_bytes:
                raise AssetError("too_large", f"file has {info.st_size} bytes, limit is {self.max_bytes}")
            with open(fd, "rb", closefd=False) as f:
                data = f.read(self.max_bytes + 1)  # the file may have grown since fstat
        except OSError as e:
            raise _file_error(e, raw_path) from e
        finally:
            os.close(fd)
        if len(data) > self.max_bytes:
            raise AssetError("too_large", f"file has more than {self.max_bytes} bytes")
        return data

    def _check_inside_roots(self, real_path: str, raw_path: str) -> None:
        if self.roots is not None and not any(Path(real_path).is_relative_to(root) for root in self.roots):
            raise AssetError("outside_roots", f"{raw_path} is outside the allowed roots (ASSETQ_ALLOWED_ROOTS)")

    def _check_opened_inside_roots(self, fd: int, raw_path: str) -> None:
        if self.roots is None:
            return
        try:
            opened = os.readlink(_PROC_FD / str(fd))
        except OSError:
            return  # no /proc (not Linux): the check on the resolved path stands alone
        if opened.endswith(" (deleted)"):
            raise AssetError("not_found", f"{raw_path} was deleted while being read")
        self._check_inside_roots(opened, raw_path)

    # -- s3:// -----------------------------------------------------------------------------
    def _s3_object(self, uri: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket or not key:
            raise AssetError("invalid_uri", f"{uri[:200]!r} needs both a bucket and a key: s3://bucket/key")
        client = self._s3_client()
        try:
            response = client.get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            try:
                length = int(response.get("ContentLength") or 0)
                if length > self.max_bytes:
                    raise AssetError("too_large", f"object has {length} bytes, limit is {self.max_bytes}")
                data: bytes = body.read(self.max_bytes + 1)
            finally:
                body.close()
        except ClientError as e:
            raise _s3_error(e, uri) from e
        except ParamValidationError as e:  # e.g. an invalid bucket name: no retry will fix it
            raise AssetError("invalid_uri", f"{uri[:200]!r}: {e}") from e
        except BotoCoreError as e:
            raise TransientError(f"S3 unreachable fetching {uri}: {e}") from e
        if len(data) > self.max_bytes:
            raise AssetError("too_large", f"object has more than {self.max_bytes} bytes")
        return data

    def _s3_client(self) -> Any:
        with self._s3_lock:
            if self._s3 is None:
                if self._s3_factory is None:
                    raise AssetError("unsupported_uri", "no S3 client configured")
                self._s3 = self._s3_factory()
            return self._s3


def _file_path(uri: str) -> str:
    """The local path of ``file:///abs/path`` (or ``file://localhost/abs/path``), percent-decoded.

    Everything after the authority is path: a literal ``#`` or ``?`` in a file
    name is kept, as ``Path.as_uri()`` would have percent-encoded a real one.
    """
    rest = uri[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest.startswith("/"):
        raise AssetError("invalid_uri", f"{uri[:200]!r}: file URIs take an absolute path and no host (file:///path)")
    path = unquote(rest)
    if "\x00" in path:
        raise AssetError("invalid_uri", f"{uri[:200]!r}: the path contains a NUL byte")
    return path


def _file_error(e: OSError, raw_path: str) -> AssetError | TransientError:
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return AssetError("not_found", f"{raw_path} does not exist")
    if e.errno in (errno.EACCES, errno.EPERM):
        return AssetError("access_denied", f"{raw_path}: permission denied")
    if e.errno == errno.EISDIR:
        return AssetError("not_a_file", f"{raw_path} is a directory")
    if e.errno == errno.ELOOP:
        return AssetError("symlink_loop", f"{raw_path}: too many levels of symbolic links")
    if e.errno == errno.ENAMETOOLONG:
        return AssetError("invalid_uri", f"{raw_path[:200]}...: file name too long")
    # EIO, ESTALE, ETIMEDOUT ...: storage trouble that may pass.
    return TransientError(f"reading {raw_path}: {e}")


def _s3_error(e: Any, uri: str) -> AssetError | TransientError:
    code = str(e.response.get("Error", {}).get("Code", ""))
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _S3_NOT_FOUND or status == 404:
        return AssetError("not_found", f"{uri} does not exist ({code or status})")
    if code in _S3_ARCHIVED:
        return AssetError("archived", f"{uri} is archived and must be restored before it can be read")
    if code in _S3_DENIED or status == 403:
        return AssetError("access_denied", f"{uri}: access denied ({code or status})")
    # Throttling (SlowDown, 503), internal errors (500): retry the chunk.
    return TransientError(f"S3 error fetching {uri}: {code or status}")

"""Fetch an asset's bytes: inline data, a file inside the allowed roots, or an S3 object."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from worker.pipeline.errors import AssetError, TransientError

S3ClientFactory = Callable[[], Any]


class Fetcher:
    """``allowed_roots``: ``file://`` paths must resolve (symlinks followed) inside one of them.

    ``None`` allows any local path (``assetq run`` over paths the user named);
    an empty list allows none.
    """

    def __init__(self, allowed_roots: Sequence[Path] | None, max_bytes: int,
                 s3_client: S3ClientFactory | None = None) -> None:
        self.roots = None if allowed_roots is None else [Path(os.path.realpath(r)) for r in allowed_roots]
        self.max_bytes = max_bytes
        self._s3_factory = s3_client
        self._s3: Any = None

    def fetch(self, asset: dict[str, Any]) -> bytes:
        if asset.get("data") is not None:
            return base64.b64decode(asset["data"])
        uri: str = asset.get("uri") or ""
        if uri.startswith("file://"):
            return self._file(unquote(uri[len("file://"):]))
        if uri.startswith("s3://"):
            return self._s3_object(uri)
        raise AssetError("unsupported_uri", f"cannot fetch {uri!r}: only file:// and s3:// are supported")

    def _file(self, raw_path: str) -> bytes:
        path = Path(os.path.realpath(raw_path))
        if self.roots is not None and not any(path.is_relative_to(root) for root in self.roots):
            raise AssetError("outside_roots", f"{raw_path} is outside the allowed roots (ASSETQ_ALLOWED_ROOTS)")
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise AssetError("too_large", f"file has {size} bytes, limit is {self.max_bytes}")
            if not path.is_file():
                raise AssetError("not_a_file", f"{raw_path} is not a regular file")
            return path.read_bytes()
        except FileNotFoundError as e:
            raise AssetError("not_found", f"{raw_path} does not exist") from e
        except PermissionError as e:
            raise AssetError("access_denied", f"{raw_path}: permission denied") from e
        except IsADirectoryError as e:
            raise AssetError("not_a_file", f"{raw_path} is a directory") from e

    def _s3_object(self, uri: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = uri[len("s3://"):].partition("/")
        if self._s3 is None:
            if self._s3_factory is None:
                raise AssetError("unsupported_uri", "no S3 client configured")
            self._s3 = self._s3_factory()
        try:
            head = self._s3.get_object(Bucket=bucket, Key=key)
            length = int(head.get("ContentLength") or 0)
            if length > self.max_bytes:
                head["Body"].close()
                raise AssetError("too_large", f"object has {length} bytes, limit is {self.max_bytes}")
            body: bytes = head["Body"].read()
            return body
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound") or status == 404:
                raise AssetError("not_found", f"{uri} does not exist") from e
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
                raise AssetError("access_denied", f"{uri}: access denied") from e
            raise TransientError(f"S3 error fetching {uri}: {code or status}") from e
        except BotoCoreError as e:
            raise TransientError(f"S3 unreachable fetching {uri}: {e}") from e

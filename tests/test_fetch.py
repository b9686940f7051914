"""Fetcher: inline data, file:// confined to the allowed roots, s3:// against a real S3 API (moto server)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import hostile
from tools.testbed.services import S3Server, free_port
from worker.models.base import RuntimeOptions
from worker.models.cache import ModelCache
from worker.pipeline.errors import ERROR_KINDS, AssetError, TransientError
from worker.pipeline.fetch import Fetcher
from worker.pipeline.run import Limits, Pipeline

REPO = Path(__file__).resolve().parents[1]
IMAGE = hostile.one_by_one()


def kind_of(fetcher: Fetcher, asset: dict[str, Any]) -> str:
    with pytest.raises(AssetError) as err:
        fetcher.fetch(asset)
    assert err.value.kind in ERROR_KINDS
    return err.value.kind


def file_asset(path: Path | str) -> dict[str, Any]:
    return {"id": "a", "uri": f"file://{path}"}


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """photos/ is the allowed root; secret.jpg, photos2/ and elsewhere/ are outside it."""
    root = tmp_path / "photos"
    (root / "album").mkdir(parents=True)
    (root / "album" / "a.jpg").write_bytes(IMAGE)
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    (tmp_path / "photos2").mkdir()
    (tmp_path / "photos2" / "b.jpg").write_bytes(b"sibling")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.jpg").write_bytes(b"elsewhere")
    return {"tmp": tmp_path, "root": root}


@pytest.fixture
def fetcher(layout: dict[str, Path]) -> Fetcher:
    return Fetcher([layout["root"]], max_bytes=10_000)


# -- inline data ---------------------------------------------------------------------------------


def test_inline_data_is_base64_decoded(fetcher: Fetcher) -> None:
    assert fetcher.fetch({"id": "a", "data": base64.b64encode(IMAGE).decode()}) == IMAGE


@pytest.mark.parametrize("data", ["not base64!!", "abc", 12345, ["x"]])
def test_inline_data_that_is_not_base64_is_invalid_data(fetcher: Fetcher, data: Any) -> None:
    assert kind_of(fetcher, {"id": "a", "data": data}) == "invalid_data"


def test_inline_data_over_the_byte_limit_is_too_large(fetcher: Fetcher) -> None:
    assert kind_of(fetcher, {"id": "a", "data": "A" * 20_000}) == "too_large"


# -- file:// inside the roots --------------------------------------------------------------------


def test_a_file_inside_the_root_is_read(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    path = layout["root"] / "album" / "a.jpg"
    assert fetcher.fetch({"id": "a", "uri": path.as_uri()}) == IMAGE
    assert fetcher.fetch({"id": "a", "uri": f"file://localhost{path}"}) == IMAGE


def test_percent_encoded_names_are_decoded(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    odd = layout["root"] / "album" / "my photo #1 ?.jpg"
    odd.write_bytes(IMAGE)
    assert fetcher.fetch({"id": "a", "uri": odd.as_uri()}) == IMAGE  # as_uri encodes space, # and ?


def test_dotdot_escape_is_outside_roots(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    root = layout["root"]
    assert kind_of(fetcher, file_asset(f"{root}/../secret.jpg")) == "outside_roots"
    assert kind_of(fetcher, file_asset(f"{root}/album/../../secret.jpg")) == "outside_roots"
    assert kind_of(fetcher, file_asset(f"{root}/album/..%2F..%2Fsecret.jpg")) == "outside_roots"
    # .. that stays inside is fine
    assert fetcher.fetch(file_asset(f"{root}/album/../album/a.jpg")) == IMAGE


def test_a_sibling_directory_sharing_the_roots_prefix_is_outside(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    assert kind_of(fetcher, file_asset(layout["tmp"] / "photos2" / "b.jpg")) == "outside_roots"


def test_a_missing_file_outside_the_roots_says_outside_not_missing(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    """The roots are checked first, so probing for files outside them learns nothing."""
    assert kind_of(fetcher, file_asset(layout["tmp"] / "nothing-here.jpg")) == "outside_roots"


def test_symlinked_file_pointing_outside_is_outside_roots(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    link = layout["root"] / "album" / "innocent.jpg"
    link.symlink_to(layout["tmp"] / "secret.jpg")
    assert kind_of(fetcher, file_asset(link)) == "outside_roots"


def test_symlinked_directory_pointing_outside_is_outside_roots(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    (layout["root"] / "linked").symlink_to(layout["tmp"] / "elsewhere")
    assert kind_of(fetcher, file_asset(layout["root"] / "linked" / "c.jpg")) == "outside_roots"


def test_symlink_that_stays_inside_the_root_is_followed(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    (layout["root"] / "alias.jpg").symlink_to(layout["root"] / "album" / "a.jpg")
    assert fetcher.fetch(file_asset(layout["root"] / "alias.jpg")) == IMAGE


def test_a_symlinked_root_is_resolved_once_and_allowed(layout: dict[str, Path]) -> None:
    alias = layout["tmp"] / "root-alias"
    alias.symlink_to(layout["root"])
    fetcher = Fetcher([alias], max_bytes=10_000)
    assert fetcher.fetch(file_asset(alias / "album" / "a.jpg")) == IMAGE
    assert fetcher.fetch(file_asset(layout["root"] / "album" / "a.jpg")) == IMAGE


def test_symlink_loop_is_reported_as_such(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    root = layout["root"]
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    assert kind_of(fetcher, file_asset(root / "loop1")) == "symlink_loop"


def test_swapping_a_directory_for_a_symlink_after_the_check_is_caught(
    fetcher: Fetcher, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the /proc/self/fd check closes: album/ becomes a symlink to elsewhere/ just before open."""
    root, elsewhere = layout["root"], layout["tmp"] / "elsewhere"
    (elsewhere / "a.jpg").write_bytes(b"not yours")
    real_open = os.open

    def swap_then_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(str(root / "album")):
            (root / "album").rename(root / "album-old")
            (root / "album").symlink_to(elsewhere)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", swap_then_open)
    assert kind_of(fetcher, file_asset(root / "album" / "a.jpg")) == "outside_roots"


def test_a_directory_is_not_a_file(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    assert kind_of(fetcher, file_asset(layout["root"] / "album")) == "not_a_file"


@pytest.mark.timeout(10)
def test_a_fifo_is_not_a_file_and_does_not_block(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    fifo = layout["root"] / "pipe.jpg"
    os.mkfifo(fifo)
    assert kind_of(fetcher, file_asset(fifo)) == "not_a_file"


def test_missing_files_are_not_found(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    root = layout["root"]
    assert kind_of(fetcher, file_asset(root / "album" / "gone.jpg")) == "not_found"
    assert kind_of(fetcher, file_asset(root / "no-such-dir" / "gone.jpg")) == "not_found"
    assert kind_of(fetcher, file_asset(root / "album" / "a.jpg" / "x.jpg")) == "not_found"  # a file as a directory


def test_a_file_over_the_byte_limit_is_too_large(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    big = layout["root"] / "big.jpg"
    big.write_bytes(bytes(10_001))
    assert kind_of(fetcher, file_asset(big)) == "too_large"
    big.write_bytes(bytes(10_000))
    assert len(fetcher.fetch(file_asset(big))) == 10_000


@pytest.mark.parametrize(
    "uri",
    ["file://relative/a.jpg", "file://fileserver/share/a.jpg", "file://", "file:///photos/a%00.jpg"],
)
def test_malformed_file_uris_are_invalid(fetcher: Fetcher, uri: str) -> None:
    assert kind_of(fetcher, {"id": "a", "uri": uri}) == "invalid_uri"


def test_a_path_name_too_long_is_invalid(fetcher: Fetcher, layout: dict[str, Path]) -> None:
    assert kind_of(fetcher, file_asset(layout["root"] / ("x" * 300))) == "invalid_uri"


@pytest.mark.parametrize("asset", [{"id": "a"}, {"id": "a", "uri": ""}, {"id": "a", "uri": 42}])
def test_an_asset_without_a_usable_uri_is_invalid(fetcher: Fetcher, asset: dict[str, Any]) -> None:
    assert kind_of(fetcher, asset) == "invalid_uri"


@pytest.mark.parametrize("uri", ["http://example.com/a.jpg", "ftp://host/a.jpg", "/abs/path.jpg", "C:\\a.jpg"])
def test_other_schemes_are_unsupported(fetcher: Fetcher, uri: str) -> None:
    assert kind_of(fetcher, {"id": "a", "uri": uri}) == "unsupported_uri"


def test_no_roots_configured_allows_nothing_and_none_allows_anything(layout: dict[str, Path]) -> None:
    secret = file_asset(layout["tmp"] / "secret.jpg")
    assert kind_of(Fetcher([], 10_000), secret) == "outside_roots"
    assert Fetcher(None, 10_000).fetch(secret) == b"outside"


def test_permission_denied_is_access_denied(layout: dict[str, Path]) -> None:
    """chmod 000 does not stop root, so as root the read runs in a child without the capabilities that bypass it."""
    locked = layout["root"] / "album" / "locked.jpg"
    locked.write_bytes(IMAGE)
    locked.chmod(0)
    if os.geteuid() != 0:
        assert kind_of(Fetcher([layout["root"]], 10_000), file_asset(locked)) == "access_denied"
        return
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and util-linux's setpriv is missing: cannot drop CAP_DAC_OVERRIDE to test this")
    script = (
        "import sys; from pathlib import Path; from worker.pipeline.fetch import Fetcher; "
        "from worker.pipeline.errors import AssetError\n"
        "try:\n    Fetcher([Path(sys.argv[1])], 10_000).fetch({'uri': 'file://' + sys.argv[2]})\n"
        "except AssetError as e:\n    print(e.kind)"
    )
    drop_bypass = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]
    proc = subprocess.run(
        [*drop_bypass, sys.executable, "-c", script, str(layout["root"]), str(locked)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if "Operation not permitted" in proc.stderr and proc.returncode != 0:
        pytest.skip(f"this container does not allow dropping capabilities: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "access_denied"


# -- s3:// against moto's S3 server -----------------------------------------------------------

BUCKET = "photos"
DENIED_PREFIX = "private/"


def _boto_client(service: str, url: str, key_id: str, secret: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        # short timeouts and one attempt: the unreachable-endpoint test must be quick
        config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture(scope="module")
def s3_reader() -> Iterator[dict[str, str]]:
    """A private moto server with IAM enforced: a reader allowed everything but ``private/``.

    Objects are put while moto still accepts anything; then ``/moto-api/reset-auth``
    turns authentication on, so credentials and policies are checked as on AWS.
    """
    server = S3Server().start()
    try:
        admin_s3 = _boto_client("s3", server.url, "admin", "admin")
        admin_iam = _boto_client("iam", server.url, "admin", "admin")
        admin_s3.create_bucket(Bucket=BUCKET)
        admin_s3.put_object(Bucket=BUCKET, Key="album/a.jpg", Body=IMAGE)
        admin_s3.put_object(Bucket=BUCKET, Key="album/big.jpg", Body=bytes(20_000))
        admin_s3.put_object(Bucket=BUCKET, Key=DENIED_PREFIX + "b.jpg", Body=IMAGE)
        admin_iam.create_user(UserName="reader")
        key = admin_iam.create_access_key(UserName="reader")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/{DENIED_PREFIX}*"},
            ],
        }
        admin_iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(policy))
        enforce = urllib.request.Request(
            f"{server.url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(enforce, timeout=10).read()
        yield {"url": server.url, "key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        server.stop()


def s3_fetcher(url: str, key_id: str, secret: str, max_bytes: int = 10_000) -> Fetcher:
    return Fetcher([], max_bytes, s3_client=lambda: _boto_client("s3", url, key_id, secret))


@pytest.fixture(scope="module")
def reader_fetcher(s3_reader: dict[str, str]) -> Fetcher:
    return s3_fetcher(s3_reader["url"], s3_reader["key_id"], s3_reader["secret"])


def test_s3_object_is_read(reader_fetcher: Fetcher) -> None:
    assert reader_fetcher.fetch({"id": "a", "uri": f"s3://{BUCKET}/album/a.jpg"}) == IMAGE


def test_s3_missing_key_is_not_found(reader_fetcher: Fetcher) -> None:
    assert kind_of(reader_fetcher, {"id": "a", "uri": f"s3://{BUCKET}/album/missing.jpg"}) == "not_found"


def test_s3_missing_bucket_is_not_found(reader_fetcher: Fetcher) -> None:
    assert kind_of(reader_fetcher, {"id": "a", "uri": "s3://no-such-bucket/a.jpg"}) == "not_found"


def test_s3_policy_denial_is_access_denied(reader_fetcher: Fetcher) -> None:
    assert kind_of(reader_fetcher, {"id": "a", "uri": f"s3://{BUCKET}/{DENIED_PREFIX}b.jpg"}) == "access_denied"


def test_s3_unknown_credentials_are_access_denied(s3_reader: dict[str, str]) -> None:
    stranger = s3_fetcher(s3_reader["url"], "AKIAUNKNOWN000000000", "nope")
    assert kind_of(stranger, {"id": "a", "uri": f"s3://{BUCKET}/album/a.jpg"}) == "access_denied"


def test_s3_object_over_the_byte_limit_is_too_large(reader_fetcher: Fetcher) -> None:
    assert kind_of(reader_fetcher, {"id": "a", "uri": f"s3://{BUCKET}/album/big.jpg"}) == "too_large"


@pytest.mark.parametrize("uri", [f"s3://{BUCKET}", f"s3://{BUCKET}/", "s3:///key.jpg", "s3://Bad_Bucket!/a.jpg"])
def test_s3_uri_without_bucket_or_key_or_with_a_bad_bucket_name_is_invalid(reader_fetcher: Fetcher, uri: str) -> None:
    assert kind_of(reader_fetcher, {"id": "a", "uri": uri}) == "invalid_uri"


def test_s3_without_a_configured_client_is_unsupported() -> None:
    assert kind_of(Fetcher([], 10_000), {"id": "a", "uri": f"s3://{BUCKET}/a.jpg"}) == "unsupported_uri"


@pytest.mark.timeout(30)
def test_s3_unreachable_is_transient_not_skipped(tmp_path: Path) -> None:
    """Nothing listens on the port: the chunk must be retried later, not its assets skipped."""
    dead = s3_fetcher(f"http://127.0.0.1:{free_port()}", "id", "secret")
    t0 = time.monotonic()
    with pytest.raises(TransientError):
        dead.fetch({"id": "a", "uri": f"s3://{BUCKET}/album/a.jpg"})
    assert time.monotonic() - t0 < 10
    # and through the pipeline: decode_all hands it on as TransientError, which run_models raises
    pipe = Pipeline(ModelCache(tmp_path, RuntimeOptions(warmup=False)), dead, Limits())
    try:
        outcomes = list(pipe.decode_all([{"id": "a", "uri": f"s3://{BUCKET}/album/a.jpg"}], []))
        assert isinstance(outcomes[0], TransientError)
        with pytest.raises(TransientError):
            pipe.run_models("B", [{"id": "a"}], outcomes, [], {})
    finally:
        pipe.close()

"""Image references, the local backend, and the S3 backend against moto over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from harness import S3Endpoint, free_port
from shared.config import Settings
from shared.errors import (
    ObjectNotFoundError,
    ObjectTooLargeError,
    ReferenceRejectedError,
    StorageError,
    StorageUnavailableError,
)
from shared.storage import LocalStore, Ref, S3Store, parse_ref, store_for
from shared.storage.s3 import s3_client

# -- references ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("s3://kyc-images/a/b.jpg", Ref("s3", "a/b.jpg", "kyc-images")),
        ("file:///tmp/x.jpg", Ref("file", "/tmp/x.jpg")),
        ("/tmp/x.jpg", Ref("file", "/tmp/x.jpg")),
        ("../shared/faces/x.jpg", Ref("file", "../shared/faces/x.jpg")),
    ],
)
def test_parse_ref(ref: str, parsed: Ref) -> None:
    assert parse_ref(ref) == parsed
    assert str(parse_ref(ref)) == ref.removeprefix("file://")


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "   ",
        "s3://kyc-images/",
        "s3://kyc-images",
        "s3://kyc-images//abs.jpg",
        "s3://kyc-images/a/../b.jpg",
        "s3://kyc-images/./b.jpg",
        "s3://kyc-images/a\nb.jpg",
        "s3://kyc-images/a\x00b.jpg",
        "s3://Bad_Bucket/a.jpg",
        "s3:///a.jpg",
        "file://relative/x.jpg",
        "http://example.com/a.jpg",
        "s3://kyc-images/" + "a" * 3000,
    ],
)
def test_bad_refs_are_rejected(ref: str) -> None:
    with pytest.raises(ReferenceRejectedError):
        parse_ref(ref)


# -- local ---------------------------------------------------------------------------------------


def test_local_roundtrip_and_errors(tmp_path: Path) -> None:
    store = LocalStore(max_bytes=10)
    target = tmp_path / "sub" / "a.bin"
    store.put(str(target), b"12345")
    assert store.get(str(target)) == b"12345"
    assert store.get(f"file://{target}") == b"12345"
    with pytest.raises(ObjectNotFoundError):
        store.get(str(tmp_path / "missing.jpg"))
    with pytest.raises(ReferenceRejectedError):
        store.get(str(tmp_path))
    (tmp_path / "big.bin").write_bytes(b"x" * 11)
    with pytest.raises(ObjectTooLargeError):
        store.get(str(tmp_path / "big.bin"))


@pytest.mark.parametrize(("grown_to", "refused"), [(8, False), (10, False), (11, True), (10_000, True)])
def test_local_file_that_grows_after_stat_is_read_whole_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grown_to: int, refused: bool
) -> None:
    """A file appended to between stat() and the read: read past its stat'd size, up to the cap."""
    target = tmp_path / "growing.bin"
    target.write_bytes(b"12345")
    real_open = Path.open

    def open_after_growth(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path == target and args[:1] == ("rb",):
            with real_open(target, "wb") as fh:
                fh.write(b"x" * grown_to)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_after_growth)
    store = LocalStore(max_bytes=10)
    if refused:
        with pytest.raises(ObjectTooLargeError):
            store.get(str(target))
    else:
        assert store.get(str(target)) == b"x" * grown_to


def test_local_root_confines_reads(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "in.jpg").write_bytes(b"ok")
    (tmp_path / "out.jpg").write_bytes(b"secret")
    (root / "link.jpg").symlink_to(tmp_path / "out.jpg")
    (tmp_path / "root2").mkdir()  # a sibling whose name starts with the root's
    (tmp_path / "root2" / "in.jpg").write_bytes(b"secret")
    store = LocalStore(max_bytes=100, root=root)
    assert store.get("in.jpg") == b"ok"
    assert store.get(str(root / "in.jpg")) == b"ok"
    for ref in (
        "../out.jpg",
        str(tmp_path / "out.jpg"),
        "link.jpg",
        "../root2/in.jpg",
        str(tmp_path / "root2" / "in.jpg"),
    ):
        with pytest.raises(ReferenceRejectedError):
            store.get(ref)


# -- S3 ------------------------------------------------------------------------------------------


def s3_settings(s3: S3Endpoint, **extra: object) -> Settings:
    return Settings(s3_endpoint_url=s3.url, s3_bucket=s3.bucket, **extra)  # type: ignore[arg-type]


def test_s3_roundtrip(s3: S3Endpoint) -> None:
    store = S3Store(s3_settings(s3))
    store.put("s3://kyc-images/in/a.jpg", b"hello")
    assert store.get("s3://kyc-images/in/a.jpg") == b"hello"


def test_s3_missing_object_is_not_found_not_transient(s3: S3Endpoint) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        S3Store(s3_settings(s3)).get("s3://kyc-images/nope.jpg")
    assert not info.value.transient
    assert "s3://kyc-images/nope.jpg" in info.value.message


def test_s3_bucket_allow_list(s3: S3Endpoint) -> None:
    boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1").put_object(
        Bucket="kyc-results", Key="a.jpg", Body=b"x"
    )
    with pytest.raises(ReferenceRejectedError, match="not allowed"):
        S3Store(s3_settings(s3)).get("s3://kyc-results/a.jpg")
    allowed = S3Store(s3_settings(s3, s3_allowed_buckets=["kyc-results"]))
    assert allowed.get("s3://kyc-results/a.jpg") == b"x"


def test_s3_size_cap_is_checked_before_download(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    # One GET: the size comes from its headers, and an oversized body is closed unread.
    store = S3Store(s3_settings(s3, max_image_bytes=100))
    store.put("s3://kyc-images/big.jpg", b"x" * 101)
    client = s3_client(store.settings)
    downloads: list[str] = []
    original = client.get_object

    def spy(**kwargs: Any) -> Any:
        response = original(**kwargs)
        body, read = response["Body"], response["Body"].read

        def counted_read(*args: Any) -> bytes:
            downloads.append(kwargs["Key"])
            return bytes(read(*args))

        monkeypatch.setattr(body, "read", counted_read)
        return response

    monkeypatch.setattr(client, "get_object", spy)
    with pytest.raises(ObjectTooLargeError, match="101 bytes"):
        store.get("s3://kyc-images/big.jpg")
    assert downloads == []
    store.put("s3://kyc-images/small.jpg", b"x" * 100)
    assert store.get("s3://kyc-images/small.jpg") == b"x" * 100
    assert downloads == ["small.jpg"]


def test_s3_put_new_writes_once(s3: S3Endpoint) -> None:
    store = S3Store(s3_settings(s3))
    assert store.put_new("s3://kyc-images/once.json", b"first")
    assert not store.put_new("s3://kyc-images/once.json", b"second")
    assert store.get("s3://kyc-images/once.json") == b"first"


def test_unreachable_s3_is_transient() -> None:
    settings = Settings(
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_connect_timeout_s=0.5,
        s3_read_timeout_s=0.5,
        s3_max_attempts=1,
    )
    with pytest.raises(StorageUnavailableError) as info:
        S3Store(settings).get("s3://kyc-images/a.jpg")
    assert info.value.transient


def test_routing_store_dispatches_by_scheme(s3: S3Endpoint, tmp_path: Path) -> None:
    store = store_for(s3_settings(s3).model_copy(update={"local_storage_root": tmp_path}))
    store.put("s3://kyc-images/r.jpg", b"s3")
    store.put(str(tmp_path / "r.jpg"), b"local")
    assert store.get("s3://kyc-images/r.jpg") == b"s3"
    assert store.get(str(tmp_path / "r.jpg")) == b"local"
    # Without a local root, no local path is read (a job document names it).
    with pytest.raises(ReferenceRejectedError, match="KYC_LOCAL_STORAGE_ROOT"):
        store_for(s3_settings(s3)).get(str(tmp_path / "r.jpg"))
    with pytest.raises(ReferenceRejectedError):
        store.validate("s3://other-bucket/r.jpg")
    assert isinstance(ObjectNotFoundError("x"), StorageError)

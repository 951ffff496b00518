"""shared/keys.py: every key under one prefix, distinct per concept, one cluster slot per gallery;
and what the job store and a gallery really write lands under that prefix."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import redis
from redis.crc import key_slot

from shared import keys
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.gallery import KYCDeepFaceDB
from shared.jobs import JobDocument, JobFailure, JobStore
from tests.conftest import features_of

BUILDERS: dict[str, Callable[..., str]] = {
    name: fn for name, fn in vars(keys).items() if inspect.isfunction(fn) and name.endswith("_key")
}


def built(fn: Callable[..., str], arg: str) -> str:
    return fn(*([arg] * len(inspect.signature(fn).parameters)))


def test_every_key_is_under_the_project_prefix() -> None:
    assert len(BUILDERS) >= 10  # the module is where keys live: finding few would mean they moved
    for name, fn in BUILDERS.items():
        assert built(fn, "x").startswith(keys.PREFIX), name


def test_no_two_concepts_share_a_key() -> None:
    made = [built(fn, "same-id") for fn in BUILDERS.values()]
    assert len(set(made)) == len(made)


@pytest.mark.parametrize("arg", ["a", "a:b", "job-1", "x" * 128])
def test_distinct_ids_give_distinct_keys_that_keep_the_id(arg: str) -> None:
    for name, fn in BUILDERS.items():
        if inspect.signature(fn).parameters:
            key = built(fn, arg)
            assert arg in key and key != built(fn, arg + "0"), name


def test_one_gallery_lives_in_one_cluster_slot() -> None:
    for name in ("customers", "watchlist", "g-1"):
        slots = {
            key_slot(fn(name).encode()) for fn in (keys.gallery_faces_key, keys.gallery_log_key, keys.gallery_meta_key)
        }
        assert len(slots) == 1, name
    # ... and galleries are spread over slots, not all pinned to one.
    assert len({key_slot(keys.gallery_faces_key(f"g{i}").encode()) for i in range(20)}) > 10


@pytest.mark.services
def test_the_job_store_writes_only_keys_built_here(redis_url: str) -> None:
    store = JobStore(Settings(redis_url=redis_url, job_ttl_s=600))
    store.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "job-1"))
    claim = store.claim("job-1", "token", lock_ttl_s=60, max_attempts=3)
    assert claim.doc is not None
    store.create(JobDocument.new("faces", {"image": "s3://kyc-images/b.jpg"}, "job-2"))
    store.requeue(claim.doc, "token", JobFailure(type="StorageUnavailableError", message="down"))
    client = redis.Redis.from_url(redis_url)
    written = {k.decode() for k in client.scan_iter("*")}
    assert written and all(k.startswith(keys.PREFIX) for k in written)
    expected = {keys.job_key("job-1"), keys.job_key("job-2"), keys.job_attempts_key("job-1"), keys.jobs_unstarted_key()}
    assert expected <= written
    client.close()


@pytest.mark.services
def test_a_gallery_writes_only_its_own_keys(redis_url: str, settings: Settings, engine: KYCDeepFace) -> None:
    gallery_settings = settings.model_copy(update={"redis_url": redis_url, "gallery_store": "redis"})
    with KYCDeepFaceDB("customers", settings=gallery_settings) as db:
        assert db.set("obama", features_of(engine, "fr_obama.jpg"))["code"] == "SUCCESS"
    client = redis.Redis.from_url(redis_url)
    written = {k.decode() for k in client.scan_iter("*")}
    client.close()
    assert {keys.gallery_faces_key("customers"), keys.gallery_log_key("customers")} <= written
    assert all(k.startswith(keys.GALLERY_PREFIX + "{customers}:") for k in written), written

"""The gallery stores (Redis, SQLite file, in-memory stub) against one contract, and replicas kept in sync."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from harness import RedisServer
from shared import features
from shared.errors import GalleryError, StorageUnavailableError
from shared.gallery.file_store import FileGalleryStore
from shared.gallery.redis_store import RedisGalleryStore
from shared.gallery.replica import Replica
from shared.gallery.store import GalleryStore, Op, check_face_id, check_gallery_name
from shared.gallery.stub import StubGalleryStore

pytestmark = pytest.mark.services

MODEL = "mobilefacenet@f055d9c9a4d8"
MODEL_512 = "fr_feature@87aacdfe5751"
LOG_MAX = 100


def feats(seed: int, model: str = MODEL, dim: int = 128) -> str:
    return features.encode(model, np.random.default_rng(seed).standard_normal(dim))


@pytest.fixture(params=["stub", "file", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GalleryStore]:
    if request.param == "stub":
        made: GalleryStore = StubGalleryStore(LOG_MAX)
    elif request.param == "file":
        made = FileGalleryStore(tmp_path, "g", LOG_MAX)
    else:
        url = request.getfixturevalue("redis_url")
        made = RedisGalleryStore(redis.Redis.from_url(url), "g", LOG_MAX)
    yield made
    made.close()


def test_put_fetch_remove(store: GalleryStore) -> None:
    assert store.model_id() is None and store.count() == 0
    store.put("a", MODEL, feats(1))
    store.put("b", MODEL, feats(2))
    store.put("a", MODEL, feats(3))  # replace
    assert store.model_id() == MODEL and store.count() == 2
    assert store.fetch(["a", "b", "zz"]) == {"a": feats(3), "b": feats(2)}
    assert store.remove("a") and not store.remove("a")
    assert store.fetch(["a"]) == {} and store.count() == 1
    assert sorted(fid for page in store.scan(batch=1) for fid, _ in page) == ["b"]


def test_second_model_is_refused(store: GalleryStore) -> None:
    store.put("a", MODEL, feats(1))
    with pytest.raises(GalleryError, match="refusing"):
        store.put("b", "other@000000000000", feats(2, "other@000000000000"))
    assert store.count() == 1


def test_log_replays_ops_in_order(store: GalleryStore) -> None:
    head = store.head()
    store.put("a", MODEL, feats(1))
    changes = store.changes(None, head.cursor)
    assert changes is None  # the gallery was created after the cursor: a new epoch, reload
    head = store.head()
    store.put("b", MODEL, feats(2))
    store.remove("a")
    changes = store.changes(head.epoch, head.cursor)
    assert changes is not None and changes.ops == [(Op.SET, "b"), (Op.DELETE, "a")]
    again = store.changes(head.epoch, changes.cursor)
    assert again is not None and again.ops == []


def test_trimmed_log_and_dropped_gallery_force_a_reload(store: GalleryStore) -> None:
    store.put("seed", MODEL, feats(0))
    head = store.head()
    for i in range(LOG_MAX + 5):
        store.put(f"f{i}", MODEL, feats(i))
    assert store.changes(head.epoch, head.cursor) is None  # fell behind the trimmed log
    head = store.head()
    store.drop()
    assert store.count() == 0 and store.model_id() is None
    store.put("x", "other@000000000000", feats(1, "other@000000000000"))  # a dropped gallery may change model
    assert store.changes(head.epoch, head.cursor) is None


@pytest.mark.parametrize(("model", "dim"), [(MODEL, 128), (MODEL_512, 512)], ids=["128d", "512d"])
def test_replicas_converge(store: GalleryStore, model: str, dim: int) -> None:
    a, b = Replica(store), Replica(store)
    rng = np.random.default_rng(0)
    expected: dict[str, str] = {}
    for step in range(300):
        face_id = f"f{rng.integers(0, 40)}"
        if rng.random() < 0.3:
            store.remove(face_id)
            expected.pop(face_id, None)
        else:
            expected[face_id] = feats(step, model, dim)
            store.put(face_id, model, expected[face_id])
        if step % 37 == 0:
            a.refresh()  # a refreshes often, b only at the end (past the trimmed log: a reload)
    ids = list(expected)
    matrix = np.stack([features.decode(expected[i]).vector for i in ids])
    for replica in (a, b):
        replica.refresh()
        assert replica.index is not None and len(replica) == len(expected)
        # A 512-d model's first pass scans its shipped 128-d projection; a 128-d one, itself.
        assert replica.index.code_dim == 128
        assert (replica.index.projection is not None) == (dim == 512)
        for face_id, value in expected.items():
            vector = replica.index.vector(face_id)
            assert vector is not None and np.allclose(vector, features.decode(value).vector)
        for q, (got, _) in zip(matrix[:5], replica.index.search(matrix[:5], 3), strict=True):
            assert got == [ids[j] for j in np.argsort(-(matrix @ q))[:3]]
    store.drop()
    a.refresh()
    assert len(a) == 0


def test_redis_down_is_transient(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    client = redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    store = RedisGalleryStore(client, "g")
    store.put("a", MODEL, feats(1))
    server.stop()
    with pytest.raises(StorageUnavailableError) as caught:
        store.put("b", MODEL, feats(2))
    assert caught.value.transient
    client.close()


@pytest.mark.parametrize("name", ["", "a b", "-x", "x" * 65, "x/y", "{x}"])
def test_bad_gallery_names(name: str) -> None:
    with pytest.raises(GalleryError):
        check_gallery_name(name)


@pytest.mark.parametrize("face_id", ["", "x" * 257, "a\nb", None, 5])
def test_bad_face_ids(face_id: object) -> None:
    with pytest.raises(GalleryError):
        check_face_id(face_id)


def test_replica_refuses_templates_written_around_the_store(redis_url: str) -> None:
    from shared import keys

    client = redis.Redis.from_url(redis_url)
    store = RedisGalleryStore(client, "g")
    for i in range(3):
        store.put(f"f{i}", MODEL, feats(i))
    replica = Replica(store)
    replica.refresh()
    assert len(replica) == 3
    # Another model's template slipped in behind the Lua check (e.g. a manual HSET).
    client.hset(keys.gallery_faces_key("g"), "intruder", feats(9, "other@000000000000"))
    client.xadd(keys.gallery_log_key("g"), {"op": "set", "id": "intruder"})
    with pytest.raises(GalleryError, match="intruder"):
        replica.refresh()
    fresh = Replica(store)
    with pytest.raises(GalleryError, match="another model"):
        fresh.refresh()  # the bulk load notices too (naming whichever face it met second)
    client.close()

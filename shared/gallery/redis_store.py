"""Gallery templates in Redis: durable data (run it with AOF and ``noeviction``), not a cache.

Per gallery (keys in :mod:`shared.keys`): a hash face id -> features string, a stream of
``set``/``del`` ops by face id, and a meta hash (model id, epoch, last trimmed log id). Writes
are Lua scripts, so checking the model, writing the template and logging the op happen
atomically: two workers enrolling with different models cannot both win, and no reader
sees a template without its log entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis

from shared import keys
from shared.errors import GalleryError, StorageUnavailableError
from shared.gallery.cipher import TemplateCipher
from shared.gallery.store import Changes, Head, Op

# The log keeps the last ops only; a worker that falls further behind reloads the gallery.
DEFAULT_LOG_MAX_LEN = 100_000
_CHANGES_PAGE = 5000

# Drop the oldest ops past ARGV[1] and remember the newest dropped id: readers behind it reload.
_TRIM = """
local excess = redis.call('XLEN', KEYS[3]) - tonumber(ARGV[1])
if excess > 0 then
  local old = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', excess)
  redis.call('XTRIM', KEYS[3], 'MAXLEN', ARGV[1])
  redis.call('HSET', KEYS[1], 'trimmed', old[#old][1])
end
"""

# KEYS: meta, faces, log. ARGV: log max, model id, new epoch, face id, features.
# Returns 1, or the gallery's model id when it differs from ours.
_PUT = f"""
local model = redis.call('HGET', KEYS[1], 'model_id')
if model and model ~= ARGV[2] then return model end
if not model then
  redis.call('HSET', KEYS[1], 'model_id', ARGV[2], 'epoch', ARGV[3])
end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('XADD', KEYS[3], '*', 'op', 'set', 'id', ARGV[4])
{_TRIM}
return 1
"""

# KEYS: meta, faces, log. ARGV: log max, face id. Returns 1 if a template was erased.
_REMOVE = f"""
if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[3], '*', 'op', 'del', 'id', ARGV[2])
{_TRIM}
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(fields: dict[Any, Any], name: str) -> str:
    """A stream entry's field, whether the client decodes responses or not."""
    return _text(fields[name] if name in fields else fields[name.encode()])


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


@contextmanager
def unavailable() -> Iterator[None]:
    """Redis errors as the transient :class:`StorageUnavailableError`."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise StorageUnavailableError(f"gallery store unavailable ({type(exc).__name__})") from None


class RedisGalleryStore:
    """One gallery on Redis.

    Args:
        client: a Redis client (bytes or text responses).
        gallery: the gallery's name (already checked).
        log_max_len: ops kept in the change log.
        cipher: encrypts templates at rest (None: stored as the features strings themselves).
        owns_client: close ``client`` with the store; False for a client the process shares
            between all its galleries.
    """

    def __init__(
        self,
        client: redis.Redis,
        gallery: str,
        log_max_len: int = DEFAULT_LOG_MAX_LEN,
        cipher: TemplateCipher | None = None,
        owns_client: bool = True,
    ) -> None:
        self._client = client
        self._cipher = cipher
        self._owns_client = owns_client
        self._keys = [keys.gallery_meta_key(gallery), keys.gallery_faces_key(gallery), keys.gallery_log_key(gallery)]
        self._log_max_len = log_max_len
        self._put = client.register_script(_PUT)
        self._remove = client.register_script(_REMOVE)

    def model_id(self) -> str | None:
        with unavailable():
            value = self._client.hget(self._keys[0], "model_id")
        return None if value is None else _text(value)

    def put(self, face_id: str, model_id: str, features: str) -> None:
        with unavailable():
            stored = features if self._cipher is None else self._cipher.seal(face_id, features)
            reply = self._put(keys=self._keys, args=[self._log_max_len, model_id, uuid.uuid4().hex, face_id, stored])
        if reply != 1:
            raise GalleryError(f"gallery holds templates of model {_text(reply)!r}; refusing features of {model_id!r}")

    def remove(self, face_id: str) -> bool:
        with unavailable():
            return bool(self._remove(keys=self._keys, args=[self._log_max_len, face_id]))

    def fetch(self, face_ids: Sequence[str]) -> dict[str, str]:
        if not face_ids:
            return {}
        with unavailable():
            values = self._client.hmget(self._keys[1], list(face_ids))
        found = {fid: self._open(fid, _text(v)) for fid, v in zip(face_ids, values, strict=True) if v is not None}
        return {fid: text for fid, text in found.items() if text is not None}

    def _open(self, face_id: str, value: str) -> str | None:
        return value if self._cipher is None else self._cipher.open(face_id, value)

    def count(self) -> int:
        with unavailable():
            return int(self._client.hlen(self._keys[1]))

    def face_ids(self) -> list[str]:
        with unavailable():
            return [_text(k) for k in self._client.hkeys(self._keys[1])]

    def head(self) -> Head:
        with unavailable(), self._client.pipeline(transaction=True) as pipe:
            pipe.hget(self._keys[0], "epoch")
            pipe.xrevrange(self._keys[2], "+", "-", count=1)
            epoch, last = pipe.execute()
        return Head(epoch=None if epoch is None else _text(epoch), cursor=_text(last[0][0]) if last else "0-0")

    def changes(self, epoch: str | None, cursor: str) -> Changes | None:
        with unavailable(), self._client.pipeline(transaction=True) as pipe:
            pipe.hmget(self._keys[0], ["epoch", "trimmed"])
            pipe.xrange(self._keys[2], f"({cursor}", "+", count=_CHANGES_PAGE)
            (now_epoch, trimmed), entries = pipe.execute()
        now_epoch = None if now_epoch is None else _text(now_epoch)
        if now_epoch != epoch:
            return None
        if trimmed is not None and _stream_id(cursor) < _stream_id(_text(trimmed)):
            return None
        ops = [(Op(_field(fields, "op")), _field(fields, "id")) for _, fields in entries]
        return Changes(ops=ops, cursor=_text(entries[-1][0]) if entries else cursor)

    def scan(self, batch: int = 5000) -> Iterator[list[tuple[str, str]]]:
        position = 0
        while True:
            with unavailable():
                position, page = self._client.hscan(self._keys[1], position, count=batch)
            if page:
                opened = [(_text(k), self._open(_text(k), _text(v))) for k, v in cast(dict[Any, Any], page).items()]
                yield [(face_id, text) for face_id, text in opened if text is not None]
            if position == 0:
                return

    def drop(self) -> None:
        with unavailable():
            self._client.delete(*self._keys)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

"""Fan-in of a screening run's chunks through Redis, without a Celery result backend.

The run's plan and a pending-chunk counter live in one hash; each chunk stores its hits under
its number, and the chunk that brings the counter to zero writes the report. Storing a part and
decrementing are one Lua step that ignores a chunk number already stored, so a redelivered chunk
can neither count twice nor leave the run waiting forever.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from shared import keys
from shared.errors import StorageUnavailableError
from shared.gallery.screening import Hit, Plan

# A run's bookkeeping expires after this long even if a chunk never finishes.
RUN_TTL_S = 7 * 24 * 3600

# KEYS: run, parts. ARGV: chunk number, hits JSON, ttl. Returns the chunks still pending.
_ADD_PART = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  return redis.call('HINCRBY', KEYS[1], 'pending', -1)
end
return tonumber(redis.call('HGET', KEYS[1], 'pending'))
"""


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise StorageUnavailableError(f"screening run store unavailable ({type(exc).__name__})") from None


class RunStore:
    """Screening runs in progress, on the gallery's Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._add_part = client.register_script(_ADD_PART)

    def start(self, run: Plan, parts: int) -> None:
        """Record a run that completes when ``parts`` chunk results have arrived."""
        key = keys.gallery_run_key(run.run_id)
        with _unavailable(), self._client.pipeline(transaction=True) as pipe:
            # Without the chunks' ids: each chunk task carries its own.
            header = run.model_copy(update={"chunks": []})
            pipe.hset(key, mapping={"plan": header.model_dump_json(), "pending": parts})
            pipe.expire(key, RUN_TTL_S)
            pipe.execute()

    def plan(self, run_id: str) -> Plan | None:
        with _unavailable():
            raw = self._client.hget(keys.gallery_run_key(run_id), "plan")
        return None if raw is None else Plan.model_validate_json(raw)

    def add_part(self, run_id: str, chunk: int, hits: list[Hit]) -> int:
        """Store one chunk's hits (once); returns how many chunks are still pending."""
        payload = json.dumps([h.model_dump() for h in hits])
        run_keys = [keys.gallery_run_key(run_id), keys.gallery_run_parts_key(run_id)]
        with _unavailable():
            return int(self._add_part(keys=run_keys, args=[chunk, payload, RUN_TTL_S]))

    def parts(self, run_id: str) -> list[list[Hit]]:
        with _unavailable():
            raw = self._client.hvals(keys.gallery_run_parts_key(run_id))
        return [[Hit.model_validate(h) for h in json.loads(part)] for part in raw]

    def reported(self, run_id: str) -> bool:
        """Whether the run's report was written (a late redelivered chunk then has nothing to do)."""
        with _unavailable():
            return bool(self._client.hexists(keys.gallery_run_key(run_id), "report_json"))

    def finish(self, run_id: str, refs: dict[str, str]) -> None:
        """Keep only the report's references (for operators), and drop the parts."""
        key = keys.gallery_run_key(run_id)
        with _unavailable(), self._client.pipeline(transaction=True) as pipe:
            pipe.delete(keys.gallery_run_parts_key(run_id))
            pipe.hset(key, mapping={"report_json": refs["json"], "report_csv": refs["csv"]})
            pipe.execute()

    def close(self) -> None:
        self._client.close()

"""Redis sources the consumers read: a stream (consumer group), a list, MinIO's namespace hash.

Each hands out :class:`Entry` values and is told afterwards to ``ack`` one (done: never again)
or ``release`` it (a transient failure: read it again later). Nothing is lost between the two:
a stream entry stays pending in the group, a list entry sits in this consumer's processing
list, a hash field stays in the hash. On start a source first re-reads what it left unfinished.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import redis

from shared import keys


@dataclass(frozen=True)
class Entry:
    """One message: ``fields`` for a stream entry, ``body`` for a list item or hash value."""

    source: str
    entry_id: str
    body: str | None = None
    fields: dict[str, str] | None = None


class Source(Protocol):
    name: str

    def read(self, count: int, block_ms: int) -> list[Entry]: ...

    def ack(self, entry: Entry) -> None: ...

    def ack_many(self, entries: Sequence[Entry]) -> None: ...

    def release(self, entry: Entry) -> None: ...


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class StreamSource:
    """A stream read by a consumer group; an entry is XACKed only once its job exists, and deleted
    with it (``XDEL``), so the stream holds only what is still to do: entries not yet read and
    the pending ones of each consumer.

    Deleting an acknowledged entry is safe for any number of consumers of the group: each entry
    is delivered to one of them, and only its own consumer acknowledges it; pending entries are
    never touched. The stream belongs to the group: another group reading it would miss what
    this one handled.
    """

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str) -> None:
        self.client = client
        self.name = stream
        self.group = group
        self.consumer = consumer
        self._recover = True  # this consumer's pending entries first (a crash, a transient error)
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int, block_ms: int) -> list[Entry]:
        if self._recover:
            entries = self._read("0", count, None)
            if entries:
                return entries
            self._recover = False
        return self._read(">", count, block_ms)

    def _read(self, start: str, count: int, block_ms: int | None) -> list[Entry]:
        reply: Any = self.client.xreadgroup(self.group, self.consumer, {self.name: start}, count=count, block=block_ms)
        entries = []
        for _stream, items in reply or []:
            for entry_id, fields in items:
                entry = Entry(
                    self.name, _text(entry_id), fields={_text(k): _text(v) for k, v in (fields or {}).items()}
                )
                if not fields:  # pending, but trimmed away since: nothing left to do
                    self.ack(entry)
                    continue
                entries.append(entry)
        return entries

    def ack(self, entry: Entry) -> None:
        self.ack_many([entry])

    def ack_many(self, entries: Sequence[Entry]) -> None:
        ids = [entry.entry_id for entry in entries]
        pipe = self.client.pipeline(transaction=True)  # both or neither: no acked entry is left behind
        pipe.xack(self.name, self.group, *ids)
        pipe.xdel(self.name, *ids)
        pipe.execute()

    def release(self, entry: Entry) -> None:
        self._recover = True


class ListSource:
    """A list producers push to; each item is moved (LMOVE) to this consumer's processing list
    and removed from there once handled, so a crash in between loses nothing.

    Args:
        pop: the end to take items from: ``RIGHT`` for producers that LPUSH (oldest first),
            ``LEFT`` for MinIO's access format, which RPUSHes.
    """

    def __init__(self, client: redis.Redis, key: str, consumer: str, pop: Literal["LEFT", "RIGHT"] = "RIGHT") -> None:
        self.client = client
        self.name = key
        self.pop = pop
        self.processing = f"{keys.processing_list_key(key)}:{consumer}"
        self._recover = True

    def read(self, count: int, block_ms: int) -> list[Entry]:
        if self._recover:
            items = [_text(v) for v in self.client.lrange(self.processing, 0, count - 1)]
            if items:
                return [Entry(self.name, _digest(body), body=body) for body in items]
            self._recover = False
        # BLMOVE takes fractional seconds (Redis >= 6); redis-py's stub says int. A short wait
        # must not round to 0, which blocks forever.
        timeout: Any = block_ms / 1000
        first = (
            self.client.blmove(self.name, self.processing, timeout, self.pop, "LEFT")
            if block_ms >= 10
            else self.client.lmove(self.name, self.processing, self.pop, "LEFT")
        )
        if first is None:
            return []
        bodies = [_text(first)]
        while len(bodies) < count:
            more = self.client.lmove(self.name, self.processing, self.pop, "LEFT")
            if more is None:
                break
            bodies.append(_text(more))
        return [Entry(self.name, _digest(body), body=body) for body in bodies]

    def ack(self, entry: Entry) -> None:
        self.client.lrem(self.processing, 1, entry.body or "")

    def ack_many(self, entries: Sequence[Entry]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.lrem(self.processing, 1, entry.body or "")
        pipe.execute()

    def release(self, entry: Entry) -> None:
        self._recover = True


_HDEL_IF_SAME = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


class HashSource:
    """MinIO's namespace format: a hash ``bucket/key`` -> ``{"Records": [...]}``, used as an inbox.

    A handled field is deleted only if its value is unchanged, so an event MinIO wrote meanwhile
    (the object overwritten) is read on the next scan.
    """

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.name = key
        self._hdel_if_same = client.register_script(_HDEL_IF_SAME)
        self._cursor = 0

    def read(self, count: int, block_ms: int) -> list[Entry]:
        reply: Any = self.client.hscan(self.name, self._cursor, count=count)
        self._cursor, found = reply
        entries = [
            Entry(self.name, _digest(_text(f) + _text(v)), body=_text(v), fields={"field": _text(f)})
            for f, v in found.items()
        ]
        if not entries and self._cursor == 0:
            time.sleep(block_ms / 1000)  # no blocking read on a hash: poll
        return entries

    def ack(self, entry: Entry) -> None:
        field = (entry.fields or {}).get("field", "")
        self._hdel_if_same(keys=[self.name], args=[field, entry.body or ""])

    def ack_many(self, entries: Sequence[Entry]) -> None:
        for entry in entries:  # a scan's few fields: one script call each
            self.ack(entry)

    def release(self, entry: Entry) -> None:
        """Nothing to do: the field stays in the hash and the next scan finds it."""

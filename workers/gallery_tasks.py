"""Gallery tasks: screening runs fanned out in chunks, and the per-shard step of a sharded search.

Thin, like every task here: planning, searching and reports live in ``shared.gallery``.

- ``kyc.gallery.screen`` (celery beat, see ``workers.gallery_schedule``) plans a rescreen or
  dedupe run and sends one ``kyc.gallery.screen_chunk`` per chunk as a Celery group; the chunk
  that completes the run (a Redis counter, :mod:`shared.gallery.runs`) writes the report.
- ``kyc.gallery.search_shard`` searches one shard of a sharded gallery for a ``search`` job
  running elsewhere and hands its top-k back through a Redis list. It goes to the queue
  ``kyc.gallery.shard<i>``, so shard i can have its own workers (and only they hold it in
  memory); the job's process searches shard 0 meanwhile, and any shard that does not answer
  within ``KYC_GALLERY_FANOUT_TIMEOUT_S`` itself.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from celery import group

from shared import keys
from shared.gallery import screening
from shared.gallery.runs import RunStore
from shared.gallery.shards import Collect, Partial
from shared.jobs.registry import HEAVY_QUEUE
from workers import process
from workers.app import app
from workers.gallery_schedule import SCREEN_TASK

log = logging.getLogger(__name__)

CHUNK_TASK = "kyc.gallery.screen_chunk"
SHARD_TASK = "kyc.gallery.search_shard"
# A fan-out's partials are collected within seconds; the list only outlives a crashed collector.
FANOUT_TTL_S = 300


def shard_queue(shard: int) -> str:
    """Shard 0 lives with the search jobs (the job's process searches it); shard i on its own queue."""
    return HEAVY_QUEUE if shard == 0 else f"kyc.gallery.shard{shard}"


@app.task(name=SCREEN_TASK, queue=HEAVY_QUEUE)
def screen(kind: screening.Kind, gallery: str, against: str) -> str:
    """Plan a run and send its chunks; returns the run id."""
    res = process.resources()
    source, target = res.gallery(gallery), res.gallery(against)
    run = screening.plan(kind, source, target, res.settings.gallery_chunk_size)
    if run.n_chunks == 0:
        _write_report(run, [], target.fpir)
        return run.run_id
    RunStore(res.redis).start(run, parts=run.n_chunks * target.shards)
    # A sharded target: one task per chunk and shard, on the shard's queue (its workers hold it).
    shards = target.shards
    tasks = (
        screen_chunk.si(run.run_id, i * shards + s, chunk, s if shards > 1 else None).set(queue=shard_queue(s))
        for i, chunk in enumerate(run.chunks)
        for s in range(shards)
    )
    group(tasks).apply_async()
    log.info("screening run %s: %d faces in %d chunks", run.run_id, run.faces, run.n_chunks)
    return run.run_id


@app.task(name=CHUNK_TASK, queue=HEAVY_QUEUE)
def screen_chunk(run_id: str, index: int, face_ids: list[str], shard: int | None = None) -> int:
    """Screen one chunk (against one shard); the last part of the run writes the report.

    Returns:
        The parts still pending.
    """
    res = process.resources()
    runs = RunStore(res.redis)
    run = runs.plan(run_id)
    if run is None or runs.reported(run_id):
        log.warning("screening run %s: chunk %d arrived after the run ended or expired", run_id, index)
        return 0
    source, target = res.gallery(run.gallery), res.gallery(run.against)
    pending = runs.add_part(run_id, index, screening.screen_chunk(run.kind, source, target, face_ids, shard))
    if pending == 0:
        refs = _write_report(run, screening.merge_hits(runs.parts(run_id)), target.fpir)
        runs.finish(run_id, refs)
    return pending


def _write_report(run: screening.Plan, hits: list[screening.Hit], fpir: float) -> dict[str, str]:
    res = process.resources()
    result = screening.report(run, hits, fpir)
    refs = screening.write_report(res.images, screening.report_prefix(res.settings), result)
    log.info("screening run %s: %d hits; report %s", run.run_id, len(hits), refs["json"])
    return refs


@app.task(name=SHARD_TASK, queue=HEAVY_QUEUE)
def search_shard(fanout_id: str, gallery: str, shard: int, queries: list[str], top_k: int) -> None:
    """Search one shard and push its partial top-k for the collecting search job."""
    res = process.resources()
    db = res.gallery(gallery)
    vectors, _errors = db.prepare(queries, top_k)
    partial = db.search_shard(shard, vectors, top_k)
    key = keys.gallery_fanout_key(fanout_id)
    with res.redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, json.dumps({"shard": shard, "partial": partial.to_json()}))
        pipe.expire(key, FANOUT_TTL_S)
        pipe.execute()


def fan_out(gallery: str, shards: list[int], queries: list[str], top_k: int) -> Collect:
    """Send one ``search_shard`` per shard to its queue; the returned ``collect()`` gathers them."""
    fanout_id = uuid.uuid4().hex
    group(
        search_shard.si(fanout_id, gallery, shard, queries, top_k).set(queue=shard_queue(shard)) for shard in shards
    ).apply_async()
    res = process.resources()
    deadline = time.monotonic() + res.settings.gallery_fanout_timeout_s
    key = keys.gallery_fanout_key(fanout_id)

    def collect() -> dict[int, Partial]:
        got: dict[int, Partial] = {}
        client = res.redis
        while len(got) < len(shards):
            left = deadline - time.monotonic()
            # Short waits: one BLPOP longer than the client's socket timeout would be retried.
            item = client.blpop([key], timeout=min(1.0, max(0.01, left))) if left > 0 else None
            if item is None and left > 1.0:
                continue
            if item is None:
                log.warning("sharded search %s: shards %s did not answer in time; searching them here",
                            fanout_id, sorted(set(shards) - set(got)))  # fmt: skip
                break
            data: dict[str, Any] = json.loads(item[1])
            got[int(data["shard"])] = Partial.from_json(data["partial"])
        client.delete(key)
        return got

    return collect

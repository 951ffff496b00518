"""Scheduled screening: ``rescreen`` (every face of gallery A against gallery B) and ``dedupe``
(pairs of faces within one gallery), in chunks, ending in a JSON and a CSV report.

A run is planned as chunks of face ids; each chunk is searched in one batched index pass
(``find_faces_many``) and yields the verified hits at the target gallery's 1:N operating point.
Chunks are independent, so a 1M-face gallery is a few hundred small tasks rather than one giant
one (``workers.gallery_tasks`` fans them out; :func:`run_in_process` runs them here). Reports
name face ids and scores only, never templates.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from shared.config import Settings
from shared.errors import GalleryError
from shared.gallery.shards import merge
from shared.storage.base import ImageStore

if TYPE_CHECKING:
    from shared.gallery.db import KYCDeepFaceDB

Kind = Literal["rescreen", "dedupe"]
# Candidates examined per face: hits past the 10th are near-duplicates of a cluster already seen.
TOP_K = 10


class Hit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    face_id: str  # the screened face (for dedupe, the smaller id of the pair)
    match_id: str  # the face it matched in the target gallery (dedupe: the larger id)
    similarity: float
    confidence: float


class Plan(BaseModel):
    """What a run screens: ``gallery`` against ``against`` (the same gallery for dedupe).

    ``chunks`` are the face ids of each chunk; a stored plan may drop them (each chunk task
    carries its own ids) and keep only the counts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    kind: Kind
    gallery: str
    against: str
    started_at: datetime
    faces: int
    n_chunks: int
    chunks: list[list[str]] = []


class Report(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: Literal["SUCCESS"] = "SUCCESS"
    run_id: str
    kind: Kind
    gallery: str
    against: str
    started_at: datetime
    finished_at: datetime
    faces_screened: int
    chunks: int
    fpir: float
    hits: list[Hit]


def plan(kind: Kind, source: KYCDeepFaceDB, target: KYCDeepFaceDB, chunk_size: int) -> Plan:
    """Split the source gallery's face ids into chunks of ``chunk_size``."""
    if kind == "dedupe" and source.gallery != target.gallery:
        raise GalleryError("dedupe screens one gallery against itself")
    ids = source.face_ids()
    started = datetime.now(UTC)
    run_id = f"{kind}-{source.gallery}-{target.gallery}-{started:%Y%m%dT%H%M%S%fZ}"
    chunks = [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]
    return Plan(
        run_id=run_id,
        kind=kind,
        gallery=source.gallery,
        against=target.gallery,
        started_at=started,
        faces=len(ids),
        n_chunks=len(chunks),
        chunks=chunks,
    )


def screen_chunk(
    kind: Kind, source: KYCDeepFaceDB, target: KYCDeepFaceDB, face_ids: list[str], shard: int | None = None
) -> list[Hit]:
    """Verified hits of one chunk, against every shard of the target or only ``shard``.

    Per shard, the hits are decided at the threshold of the whole target gallery, so the union
    of the shards' hits is the gallery's: a sharded run needs no shard to wait for another.
    Faces deleted since the plan are skipped.

    Raises:
        GalleryError: the galleries hold templates of different models.
    """
    templates = source.templates(face_ids)
    ids = [face_id for face_id in face_ids if face_id in templates]
    # For dedupe a face finds itself first: ask for one more.
    top_k = TOP_K + (1 if kind == "dedupe" else 0)
    vectors, errors = target.prepare([templates[face_id] for face_id in ids], top_k, sealed=False)
    shards = range(target.shards) if shard is None else [shard]
    found = merge([target.search_shard(s, vectors, top_k) for s in shards], top_k)
    scored, _ = target.scores(errors, replace(found, size=target.count()) if shard is not None else found)
    hits: list[Hit] = []
    for face_id, error, candidates in zip(ids, errors, scored, strict=True):
        if candidates is None:
            why = error.message if error is not None else "refused"
            raise GalleryError(f"screening {source.gallery!r} against {target.gallery!r}: {why}")
        for c in candidates:
            if not c.verified or (kind == "dedupe" and c.face_id == face_id):
                continue
            a, b = (face_id, c.face_id) if kind == "rescreen" else sorted((face_id, c.face_id))
            hits.append(Hit(face_id=a, match_id=b, similarity=round(c.cosine, 6), confidence=round(c.confidence, 6)))
    return hits


def merge_hits(parts: Iterable[list[Hit]]) -> list[Hit]:
    """All chunks' hits, each pair once (dedupe finds a pair from both sides), best first."""
    best: dict[tuple[str, str], Hit] = {}
    for part in parts:
        for hit in part:
            key = (hit.face_id, hit.match_id)
            if key not in best or hit.similarity > best[key].similarity:
                best[key] = hit
    return sorted(best.values(), key=lambda h: (-h.similarity, h.face_id, h.match_id))


def report(run: Plan, hits: list[Hit], fpir: float) -> Report:
    return Report(
        run_id=run.run_id,
        kind=run.kind,
        gallery=run.gallery,
        against=run.against,
        started_at=run.started_at,
        finished_at=datetime.now(UTC),
        faces_screened=run.faces,
        chunks=run.n_chunks,
        fpir=fpir,
        hits=hits,
    )


def report_prefix(settings: Settings) -> str:
    """Where reports go: ``KYC_GALLERY_REPORT_PREFIX``, else the results bucket, else a local dir."""
    if settings.gallery_report_prefix:
        return settings.gallery_report_prefix.rstrip("/") + "/"
    if settings.s3_results_bucket:
        return f"s3://{settings.s3_results_bucket}/{settings.s3_results_prefix}gallery-reports/"
    return str(Path(settings.gallery_file_dir).parent / "gallery-reports") + "/"


def write_report(store: ImageStore, prefix: str, result: Report) -> dict[str, str]:
    """Write ``<run_id>.json`` and ``<run_id>.csv`` under ``prefix``; return their references."""
    refs = {"json": f"{prefix}{result.run_id}.json", "csv": f"{prefix}{result.run_id}.csv"}
    store.put(refs["json"], json.dumps(result.model_dump(mode="json"), indent=1).encode())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["face_id", "match_id", "similarity", "confidence"])
    writer.writerows([h.face_id, h.match_id, h.similarity, h.confidence] for h in result.hits)
    store.put(refs["csv"], buffer.getvalue().encode())
    return refs


def run_in_process(
    kind: Kind, source: KYCDeepFaceDB, target: KYCDeepFaceDB, store: ImageStore, settings: Settings
) -> tuple[Report, dict[str, str]]:
    """A whole run in this process, chunk after chunk (the embedded mode, and the CLI)."""
    run = plan(kind, source, target, settings.gallery_chunk_size)
    hits = merge_hits(screen_chunk(kind, source, target, chunk) for chunk in run.chunks)
    result = report(run, hits, target.fpir)
    return result, write_report(store, report_prefix(settings), result)

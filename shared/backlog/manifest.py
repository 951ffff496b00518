"""Backlog manifests: a CSV of ``selfie,document`` (plus an optional ``job_id``) per verify job.

Local paths are resolved against the manifest's directory, so a manifest and its photos can move
together. A row without a ``job_id`` gets one derived from its inputs, so running the same
manifest twice names (and therefore answers) every job once.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from shared.errors import JobError, KYCFaceError
from shared.jobs import JobDocument
from shared.storage.refs import parse_ref

REQUIRED_COLUMNS = ("selfie", "document")
JOB_ID_COLUMN = "job_id"


@dataclass(frozen=True)
class ManifestRow:
    """One manifest line as a ``queued`` verify job.

    Attributes:
        line: the line number in the CSV file (the header is line 1), for error messages.
        job: the job to run for this row.
    """

    line: int
    job: JobDocument


def backlog_job_id(kind: str, inputs: dict[str, str]) -> str:
    """A job id derived from the work itself: the same inputs always give the same id."""
    canonical = json.dumps({"kind": kind, "inputs": inputs}, sort_keys=True, separators=(",", ":"))
    return f"{kind}-{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


def _resolve(ref: str, base: Path) -> str:
    """Anchor a relative local path at ``base``; S3 and absolute references are kept as written."""
    parsed = parse_ref(ref)
    if parsed.scheme == "file" and not ref.startswith("file://") and not Path(ref).is_absolute():
        return str((base / ref).resolve())
    return ref


def read_manifest(path: Path) -> list[ManifestRow]:
    """Parse a manifest into verify jobs, one per data row, in file order.

    Args:
        path: the CSV file; a header with at least ``selfie`` and ``document``. Other columns are
            ignored, so a manifest may carry the caller's own bookkeeping.

    Returns:
        The rows. Rows with identical work share one job (and one job id).

    Raises:
        JobError: unreadable file, missing columns, an empty or unsafe reference, a bad job id, or
            one job id given to two different pieces of work. The message names the line.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise JobError(f"{path}: the header must name the columns {', '.join(missing)}")
            records = [(reader.line_num, record) for record in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise JobError(f"{path}: cannot read the manifest ({exc})") from None
    base = path.resolve().parent
    rows: list[ManifestRow] = []
    first: dict[str, ManifestRow] = {}
    for line, record in records:
        job = _job(record, base, f"{path}:{line}")
        earlier = first.setdefault(job.job_id, ManifestRow(line, job))
        if not earlier.job.same_request(job):
            raise JobError(
                f"{path}:{line}: job id {job.job_id!r} is already used on line {earlier.line} for other images"
            )
        rows.append(ManifestRow(line, earlier.job))
    return rows


def _job(record: dict[str, str | None], base: Path, where: str) -> JobDocument:
    try:
        inputs = {c: _resolve((record.get(c) or "").strip(), base) for c in REQUIRED_COLUMNS}
        job_id = (record.get(JOB_ID_COLUMN) or "").strip() or backlog_job_id("verify", inputs)
        return JobDocument.new("verify", inputs, job_id)
    except KYCFaceError as exc:
        raise JobError(f"{where}: {exc.message}") from None

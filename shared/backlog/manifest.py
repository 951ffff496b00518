"""Backlog manifests: a CSV of ``selfie,document`` (plus an optional ``job_id``) per verify job.

A manifest is read as a stream, so a million-row file (local or ``s3://bucket/key.csv``) costs
no more memory than a short one. An S3 prefix (``s3://bucket/cases/``) is a manifest too: each
folder under it holding a ``selfie.*`` and a ``document.*`` object is one row, its name the
``case_id``. Relative references are resolved against the manifest's folder, so a manifest and
its photos can move together. A row without a ``job_id`` gets one derived from its inputs, so
running the same manifest twice names (and therefore answers) every job once.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.errors import JobError, KYCFaceError
from shared.jobs import JobDocument
from shared.storage.refs import parse_ref

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("selfie", "document")
JOB_ID_COLUMN = "job_id"
CASE_ID_COLUMN = "case_id"
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ManifestRow:
    """One manifest line as a ``queued`` verify job.

    Attributes:
        line: the line number in the CSV file (the header is line 1), for error messages; the
            row's number for a listed S3 prefix.
        job: the job to run for this row.
        columns: the row as the manifest wrote it (every column, extra ones included).
    """

    line: int
    job: JobDocument
    columns: dict[str, str] = field(default_factory=dict)


def backlog_job_id(kind: str, inputs: dict[str, str]) -> str:
    """A job id derived from the work itself: the same inputs always give the same id."""
    canonical = json.dumps({"kind": kind, "inputs": inputs}, sort_keys=True, separators=(",", ":"))
    return f"{kind}-{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


def _resolve(ref: str, base: str) -> str:
    """Anchor a relative path at ``base`` (a folder, local or ``s3://``); S3 and absolute
    references are kept as written."""
    parsed = parse_ref(ref)
    if parsed.scheme == "file" and not ref.startswith("file://") and not Path(ref).is_absolute():
        if base.startswith("s3://"):
            return base + posixpath.normpath(ref)
        return str((Path(base) / ref).resolve())
    return ref


def iter_manifest(source: str | Path, settings: Settings | None = None) -> Iterator[ManifestRow]:
    """Stream a manifest's rows in order, one verify job each.

    Args:
        source: a local CSV path, ``s3://bucket/key.csv``, or an S3 prefix ending in ``/``.
        settings: S3 settings, needed for ``s3://`` sources.

    Yields:
        The rows. Identical rows give identical jobs (one job id).

    Raises:
        JobError: unreadable file, missing columns, an empty or unsafe reference, or a bad job id.
            The message names the line.
    """
    text = str(source)
    if not text.startswith("s3://"):
        path = Path(text)
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                yield from _rows(fh, text, str(path.resolve().parent))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise JobError(f"{text}: cannot read the manifest ({exc})") from None
        return
    if settings is None:
        raise JobError(f"{text}: an S3 manifest needs the S3 settings")
    if text.endswith("/"):
        yield from _listed_cases(text, settings)
        return
    ref = parse_ref(text)
    try:
        body = _s3(settings).get_object(Bucket=str(ref.bucket), Key=ref.key)["Body"]
        yield from _rows(_lines(body.iter_chunks(_CHUNK_BYTES)), text, text.rsplit("/", 1)[0] + "/")
    except (UnicodeDecodeError, csv.Error) as exc:
        raise JobError(f"{text}: cannot read the manifest ({exc})") from None
    except KYCFaceError:
        raise
    except Exception as exc:  # botocore's errors: no such key, access denied, unreachable
        raise JobError(f"{text}: cannot read the manifest ({type(exc).__name__}: {exc})") from None


def read_manifest(source: str | Path, settings: Settings | None = None) -> list[ManifestRow]:
    """The whole manifest as a list, refusing one job id given to two different pieces of work.

    For manifests that fit in memory; a backlog streams with :func:`iter_manifest` instead.

    Raises:
        JobError: as :func:`iter_manifest`, or a job id reused for other images (naming both lines).
    """
    rows: list[ManifestRow] = []
    first: dict[str, ManifestRow] = {}
    for row in iter_manifest(source, settings):
        earlier = first.setdefault(row.job.job_id, row)
        if not earlier.job.same_request(row.job):
            raise JobError(
                f"{source}:{row.line}: job id {row.job.job_id!r} is already used on line {earlier.line} for other images"
            )
        rows.append(ManifestRow(row.line, earlier.job, row.columns))
    return rows


def _rows(lines: Iterable[str], where: str, base: str) -> Iterator[ManifestRow]:
    reader = csv.DictReader(lines)
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise JobError(f"{where}: the header must name the columns {', '.join(missing)}")
    for record in reader:
        columns = {k: (v or "") for k, v in record.items() if k is not None}
        yield ManifestRow(reader.line_num, _job(columns, base, f"{where}:{reader.line_num}"), columns)


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Text lines (ends kept, so quoted newlines survive) of a byte stream, decoded as it comes."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        lines = pending.splitlines(keepends=True)
        pending = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        yield from lines
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _listed_cases(prefix: str, settings: Settings) -> Iterator[ManifestRow]:
    """One row per ``<prefix><case>/`` folder with a ``selfie.*`` and a ``document.*`` object.

    S3 lists keys in order, so one case's objects arrive together: a case is complete when the
    listing moves to the next folder, and only that one case is held in memory.
    """
    ref = parse_ref(prefix + "x")  # the prefix's bucket and key checked as an object's would be
    bucket, key_prefix = str(ref.bucket), ref.key[:-1]
    case: str | None = None
    found: dict[str, str] = {}
    number = 0
    for key in _listed_keys(settings, bucket, key_prefix, prefix):
        name, _, file = key[len(key_prefix) :].partition("/")
        if not file or "/" in file:
            continue  # not directly inside a case folder
        if name != case:
            if case is not None:
                number += 1
                yield from _case_row(bucket, key_prefix, case, found, number)
            case, found = name, {}
        role = file.rsplit(".", 1)[0]
        if role in REQUIRED_COLUMNS:
            found[role] = key
    if case is not None:
        yield from _case_row(bucket, key_prefix, case, found, number + 1)


def _listed_keys(settings: Settings, bucket: str, key_prefix: str, where: str) -> Iterator[str]:
    pages = _s3(settings).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix)
    try:
        for page in pages:
            # Collected per page (1,000 keys), so a listing error is not confused with the caller's.
            keys = [obj["Key"] for obj in page.get("Contents", [])]
            yield from keys
    except Exception as exc:  # botocore's errors: no such bucket, access denied, unreachable
        raise JobError(f"{where}: cannot list the cases ({type(exc).__name__}: {exc})") from None


def _case_row(bucket: str, key_prefix: str, case: str, found: dict[str, str], number: int) -> Iterator[ManifestRow]:
    if set(found) != set(REQUIRED_COLUMNS):
        log.warning("skipping case %r under s3://%s/%s: no %s", case, bucket, key_prefix, " or ".join(
            c for c in REQUIRED_COLUMNS if c not in found))  # fmt: skip
        return
    columns = {CASE_ID_COLUMN: case, **{role: f"s3://{bucket}/{found[role]}" for role in REQUIRED_COLUMNS}}
    yield ManifestRow(number, _job(columns, "", f"s3://{bucket}/{key_prefix}{case}/"), columns)


def _job(record: dict[str, str], base: str, where: str) -> JobDocument:
    try:
        inputs = {c: _resolve(record.get(c, "").strip(), base) for c in REQUIRED_COLUMNS}
        job_id = record.get(JOB_ID_COLUMN, "").strip() or backlog_job_id("verify", inputs)
        return JobDocument.new("verify", inputs, job_id)
    except KYCFaceError as exc:
        raise JobError(f"{where}: {exc.message}") from None


def _s3(settings: Settings) -> Any:
    from shared.storage.s3 import s3_client

    return s3_client(settings)

"""A backlog's output directory: one JSON job document per job, ``summary.csv`` and its state.

``summary.csv`` is appended to in manifest order as rows are answered; ``summary.csv.state``
records, after each append, how many manifest rows it holds and its length in bytes. A resumed
run cuts the summary back to that length (a line written after the last state is written
again, never twice) and skips that many rows.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from shared.errors import UnreadableJobError
from shared.jobs import JobDocument, JobStatus
from shared.jobs.runner import result_code

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.csv"
STATE_FILE = SUMMARY_FILE + ".state"
SUMMARY_FIELDS = ("job_id", "status", "code", "confidence", "verified")
# A manifest column named like a result column is kept under this prefix (job_id is the same value).
MANIFEST_COLUMN_PREFIX = "manifest_"


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so an interrupted run never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary_row(doc: JobDocument) -> dict[str, str]:
    """The summary line of one job: its status, the answer's code, confidence and verdict.

    ``code`` is the answer's (``SUCCESS``, ``NO_FACE``...) for a finished job and the error's
    for a failed one; ``confidence`` is empty when nothing was compared. ``verified`` is
    ``true``/``false`` for every answer (a refusal such as ``NO_FACE`` is not verified) and
    empty only when there is no answer (a failed or unfinished job).
    """
    row = {"job_id": doc.job_id, "status": doc.status.value, "code": result_code(doc), "confidence": "", "verified": ""}
    if doc.result is not None:
        if doc.result.get("confidence") is not None:
            row["confidence"] = f"{float(doc.result['confidence']):.6f}"
        if doc.status is JobStatus.SUCCEEDED:
            row["verified"] = "true" if doc.result.get("verified") is True else "false"
    return row


@dataclass(frozen=True)
class SummaryState:
    """How far ``summary.csv`` got: the manifest it answers, its header, rows and bytes written."""

    manifest: str
    header: list[str]
    rows: int
    bytes: int


def summary_header(manifest_columns: list[str]) -> list[str]:
    """The manifest's own columns (renamed where they clash), then the result columns."""
    own = [c if c == "job_id" or c not in SUMMARY_FIELDS else MANIFEST_COLUMN_PREFIX + c for c in manifest_columns]
    return own + [f for f in SUMMARY_FIELDS if f not in own]


class BacklogOutput:
    """The directory a backlog writes to; created on first use.

    Args:
        directory: where ``<job_id>.json``, ``summary.csv`` and its state go.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.summary_path = directory / SUMMARY_FILE
        self.state_path = directory / STATE_FILE
        self._summary: IO[str] | None = None
        self._writer: csv.DictWriter[str] | None = None
        self._rows = 0
        self._manifest = ""
        self._header: list[str] = []

    def document_path(self, job_id: str) -> Path:
        """Where the job's document goes: ``<directory>/<job_id>.json``."""
        return self.directory / f"{job_id}.json"

    def finished(self, job: JobDocument) -> JobDocument | None:
        """The terminal document a previous run wrote for this job, if it asked for the same work."""
        path = self.document_path(job.job_id)
        try:
            doc = JobDocument.from_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, UnreadableJobError):
            log.warning("ignoring unreadable job document %s", path)
            return None
        return doc if doc.status.terminal and doc.same_request(job) else None

    def write_document(self, doc: JobDocument) -> None:
        """Write (or replace) the job's document as indented JSON."""
        _atomic_write(self.document_path(doc.job_id), doc.model_dump_json(indent=2) + "\n")

    def open_summary(self, manifest: str, manifest_columns: list[str]) -> int:
        """Open ``summary.csv`` for appending; returns how many manifest rows it already holds.

        A summary of the same manifest with a state file is resumed; anything else starts over.
        """
        header = summary_header(manifest_columns)
        state = self._read_state()
        resume = (
            state is not None
            and state.manifest == manifest
            and state.header == header
            and self.summary_path.is_file()
            and self.summary_path.stat().st_size >= state.bytes
        )
        self._manifest, self._header = manifest, header
        if resume and state is not None:
            with self.summary_path.open("r+b") as fh:
                fh.truncate(state.bytes)
            self._rows = state.rows
            self._summary = self.summary_path.open("a", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._summary, fieldnames=header, lineterminator="\n")
        else:
            self._rows = 0
            self._summary = self.summary_path.open("w", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._summary, fieldnames=header, lineterminator="\n")
            self._writer.writeheader()
            self.checkpoint()
        return self._rows

    def append(self, columns: dict[str, str], doc: JobDocument) -> None:
        """Append one manifest row's summary line (its own columns beside the job's outcome)."""
        if self._writer is None:
            raise RuntimeError("open_summary() first")
        line = {c if c == "job_id" or c not in SUMMARY_FIELDS else MANIFEST_COLUMN_PREFIX + c: v
                for c, v in columns.items()}  # fmt: skip
        line.update(summary_row(doc))
        self._writer.writerow(line)
        self._rows += 1

    def checkpoint(self) -> None:
        """Make the lines appended so far durable, then record them in the state file."""
        if self._summary is None:
            return
        self._summary.flush()
        os.fsync(self._summary.fileno())
        state = SummaryState(self._manifest, self._header, self._rows, self._summary.tell())
        _atomic_write(self.state_path, json.dumps(asdict(state)) + "\n")

    def close(self) -> None:
        """Checkpoint and close the summary."""
        if self._summary is not None:
            self.checkpoint()
            self._summary.close()
            self._summary = self._writer = None

    def _read_state(self) -> SummaryState | None:
        try:
            return SummaryState(**json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            log.warning("ignoring unreadable backlog state %s; the summary starts over", self.state_path)
            return None

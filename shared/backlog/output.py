"""A backlog's output directory: one JSON job document per job and ``summary.csv``."""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from shared.jobs import JobDocument

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.csv"
SUMMARY_FIELDS = ("job_id", "status", "code", "confidence", "verified")


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
    for a failed one; ``confidence`` and ``verified`` are empty when nothing was compared.
    """
    row = {"job_id": doc.job_id, "status": doc.status.value, "code": "", "confidence": "", "verified": ""}
    if doc.result is not None:
        row["code"] = str(doc.result.get("code", ""))
        if doc.result.get("confidence") is not None:
            row["confidence"] = f"{float(doc.result['confidence']):.6f}"
            row["verified"] = "true" if doc.result.get("verified") else "false"
    elif doc.error is not None:
        row["code"] = doc.error.code
    return row


class BacklogOutput:
    """The directory a backlog writes to; created on first use.

    Args:
        directory: where ``<job_id>.json`` and ``summary.csv`` go.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

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
        except (OSError, ValidationError):
            log.warning("ignoring unreadable job document %s", path)
            return None
        return doc if doc.status.terminal and doc.same_request(job) else None

    def write_document(self, doc: JobDocument) -> None:
        """Write (or replace) the job's document as indented JSON."""
        _atomic_write(self.document_path(doc.job_id), doc.model_dump_json(indent=2) + "\n")

    def write_summary(self, docs: Sequence[JobDocument]) -> Path:
        """Write one summary line per document, in the given (manifest) order."""
        path = self.directory / SUMMARY_FILE
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(summary_row(d) for d in docs)
        _atomic_write(path, buffer.getvalue())
        return path

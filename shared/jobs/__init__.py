"""Job documents and their store: what producers submit, workers run and callers poll."""

from shared.jobs.archive import ResultArchive
from shared.jobs.model import (
    JOB_INPUTS,
    SCHEMA_VERSION,
    InputType,
    JobDocument,
    JobFailure,
    JobKind,
    JobStatus,
    validate_inputs,
)
from shared.jobs.store import Claim, ClaimOutcome, JobStore

__all__ = [
    "JOB_INPUTS",
    "SCHEMA_VERSION",
    "Claim",
    "ClaimOutcome",
    "InputType",
    "JobDocument",
    "JobFailure",
    "JobKind",
    "JobStatus",
    "JobStore",
    "ResultArchive",
    "validate_inputs",
]

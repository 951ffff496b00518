"""Jobs: the registry of kinds, job documents and their store, and the runner that executes them."""

from shared.jobs.archive import ResultArchive
from shared.jobs.model import SCHEMA_VERSION, JobDocument, JobFailure, JobStatus
from shared.jobs.registry import REGISTRY, JobInputs, JobKindSpec, job_kind
from shared.jobs.store import Claim, ClaimOutcome, JobStore

__all__ = [
    "REGISTRY",
    "SCHEMA_VERSION",
    "Claim",
    "ClaimOutcome",
    "JobDocument",
    "JobFailure",
    "JobInputs",
    "JobKindSpec",
    "JobStatus",
    "JobStore",
    "ResultArchive",
    "job_kind",
]

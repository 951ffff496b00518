"""Terminal job documents as JSON objects in S3 (``KYC_RESULT_STORE=s3`` or ``both``)."""

from __future__ import annotations

from shared.config import Settings
from shared.errors import ObjectNotFoundError
from shared.jobs.model import JobDocument
from shared.storage.s3 import S3Store


class ResultArchive:
    """``s3://<results bucket>/<results prefix><address>.json``, written once per job.

    The address is the job's tenant-scoped id (``acme/case-1`` is ``results/acme/case-1.json``),
    so an S3 lifecycle rule or IAM policy can target one tenant's prefix.

    Args:
        settings: ``s3_results_bucket`` (default ``s3_bucket``), ``s3_results_prefix`` and the
            S3 connection settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_results_bucket or settings.s3_bucket
        self.prefix = settings.s3_results_prefix
        self.s3 = S3Store(settings, buckets={self.bucket})

    def ref_for(self, job_id: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{job_id}.json"

    def write_once(self, doc: JobDocument) -> JobDocument:
        """Store a terminal document unless one is already there.

        Returns:
            The archived document: ``doc``, or the one an earlier execution wrote first, so two
            deliveries of the same job can never leave two different answers.
        """
        ref = self.ref_for(doc.address)
        if self.s3.put_new(ref, doc.to_json().encode()):
            return doc
        existing = self.read(doc.address)
        return existing if existing is not None else doc

    def read(self, job_id: str) -> JobDocument | None:
        try:
            return JobDocument.from_json(self.s3.get(self.ref_for(job_id)))
        except ObjectNotFoundError:
            return None

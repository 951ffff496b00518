"""Terminal job documents as JSON objects in S3 (``KYC_RESULT_STORE=s3`` or ``both``).

Each object carries the tag ``kyc-expire-days=<days>`` (the job TTL in whole days, rounded up),
which a bucket lifecycle rule expires on, so an archived result lives as long as its job and no
longer (docs/OPERATIONS.md, "Templates": the MinIO rule of docker compose and the AWS one).
"""

from __future__ import annotations

import math
from typing import Any

from shared.config import Settings
from shared.errors import ObjectNotFoundError
from shared.jobs.model import JobDocument
from shared.storage.s3 import S3Store

EXPIRY_TAG = "kyc-expire-days"


def expiry_days(ttl_s: int) -> int:
    """The lifecycle rule's days for a job TTL: whole days, rounded up (S3 expires by day)."""
    return max(1, math.ceil(ttl_s / 86400))


def lifecycle_rule(ttl_s: int) -> dict[str, Any]:
    """The bucket lifecycle rule (S3 ``PutBucketLifecycleConfiguration``, MinIO ``mc ilm import``)
    that expires the archived results of jobs with this TTL."""
    days = expiry_days(ttl_s)
    return {
        "ID": f"kyc-results-expire-{days}d",
        "Status": "Enabled",
        "Filter": {"Tag": {"Key": EXPIRY_TAG, "Value": str(days)}},
        "Expiration": {"Days": days},
    }


class ResultArchive:
    """``s3://<results bucket>/<results prefix><address>.json``, written once per job.

    The address is the job's tenant-scoped id (``acme/case-1`` is ``results/acme/case-1.json``),
    so an S3 lifecycle rule or IAM policy can target one tenant's prefix.

    Args:
        settings: ``s3_results_bucket`` (default ``s3_bucket``), ``s3_results_prefix``, the job
            TTL (the expiry tag) and the S3 connection settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_results_bucket or settings.s3_bucket
        self.prefix = settings.s3_results_prefix
        self.tags = {EXPIRY_TAG: str(expiry_days(settings.job_ttl_s))}
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
        if self.s3.put_new(ref, doc.to_json().encode(), self.tags):
            return doc
        existing = self.read(doc.address)
        return existing if existing is not None else doc

    def replace(self, doc: JobDocument) -> None:
        """Overwrite an archived document (erasure redacts a template out of it), and delete the
        versions it replaced: in a versioned results bucket they still hold the template."""
        ref = self.ref_for(doc.address)
        self.s3.put(ref, doc.to_json().encode(), self.tags)
        self.s3.drop_older_versions(ref)

    def read(self, job_id: str) -> JobDocument | None:
        try:
            return JobDocument.from_json(self.s3.get(self.ref_for(job_id)))
        except ObjectNotFoundError:
            return None

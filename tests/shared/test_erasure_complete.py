"""Erasure complete: re-enrolling a face id erases the template it replaces everywhere, as a
forget would; a forget also drops the intake requests that carried a template and every older
version of an archived result (the results bucket is versioned here); and no key or object
version keeps either template, nor its digest.

Real models and images, real Redis, moto's S3 with versioning; jobs run through the job runner.
"""

from __future__ import annotations

import json

import pytest
import redis

from harness import S3Endpoint
from shared import features
from shared.config import Settings
from shared.gallery import KYCDeepFaceDB
from shared.jobs.erasure import holds
from shared.jobs.resources import Resources
from shared.jobs.store import ERASED
from shared.schemas import FacesResult
from shared.storage.s3 import s3_client
from shared.tenants import DEFAULT_TENANT, Tenant
from tests.shared.test_erasure import DOCUMENT, OTHER, SELFIE, needles, redis_contents, ref, run, stack

pytestmark = [pytest.mark.services, pytest.mark.slow]
__all__ = ["stack"]  # the fixture, shared with test_erasure.py


def every_version(s3: S3Endpoint) -> dict[str, bytes]:
    """Every version of every object of every bucket, by ``s3://bucket/key#version``."""
    client = s3_client(Settings(s3_endpoint_url=s3.url))
    out: dict[str, bytes] = {}
    for bucket in s3.buckets():
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for version in page.get("Versions", []):
                body = client.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"]
                out[f"s3://{bucket}/{version['Key']}#{version['VersionId']}"] = body.read()
    return out


def traces(redis_values: dict[str, bytes], objects: dict[str, bytes], template: str) -> list[str]:
    """Where the template (any of its needles) or its digest is, in a key's name or value."""
    digest = features.digest_of_string(template).encode()
    found = [*needles(template), digest]
    return sorted(
        name
        for name, value in {**redis_values, **objects}.items()
        if digest in name.encode() or any(n in value for n in found)
    )


def template_of(stack: Resources, s3: S3Endpoint, photo: str, job_id: str) -> str:
    faces = run(stack, "faces", {"image": ref(s3, photo)}, job_id)
    return FacesResult.model_validate(faces.result).faces[0].template()


def test_re_enrol_then_forget_leaves_no_trace_of_either_template(stack: Resources, s3: S3Endpoint) -> None:
    client = redis.Redis.from_url(str(stack.settings.redis_url))
    s3_client(Settings(s3_endpoint_url=s3.url)).put_bucket_versioning(
        Bucket=s3.results_bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    first = template_of(stack, s3, SELFIE, "r:faces-1")
    kept = template_of(stack, s3, OTHER, "r:faces-other")
    run(stack, "enroll", {"gallery": "watch", "face_id": "subject-1", "probe": first, "include_features": "true"},
        "r:enroll-1")  # fmt: skip
    run(stack, "enroll", {"gallery": "watch", "face_id": "subject-2", "probe": kept}, "r:enroll-other")
    run(stack, "search", {"gallery": "watch", "probe": first, "include_features": "true"}, "r:search-1")
    intake = stack.settings.events_intake_stream
    client.xadd(intake, {"kind": "enroll", "gallery": "watch", "face_id": "subject-1", "probe": first})
    client.xadd(intake, {"request": json.dumps({"kind": "search", "gallery": "watch", "probe": kept})})
    client.xadd(intake, {"kind": "search", "gallery": "watch", "probe": first, "tenant": "acme"})  # another tenant's
    before = traces(redis_contents(client), every_version(s3), first)
    assert "kyc:job:r:faces-1" in before and "kyc:job:r:enroll-1" in before  # the scan sees it where it is
    assert any(name.startswith(f"s3://{s3.results_bucket}/results/r:search-1.json#") for name in before)

    # Re-enrolment: the replaced template is erased at once, from every document and version.
    run(stack, "enroll", {"gallery": "watch", "face_id": "subject-1", "probe": ref(s3, DOCUMENT),
                          "include_features": "true"}, "r:enroll-2")  # fmt: skip
    with KYCDeepFaceDB("watch", settings=stack.settings) as watch:
        second = watch.templates(["subject-1"])["subject-1"]
    assert features.digest_of_string(second) != features.digest_of_string(first)
    left = traces(redis_contents(client), every_version(s3), first)
    assert left == ["kyc:intake"], left  # only acme's request: another tenant's erasure is its own
    entries = [{k.decode(): v.decode() for k, v in f.items()} for _, f in client.xrange(intake)]
    assert [e.get("tenant") for e in entries if holds(e, {features.digest_of_string(first)}, Tenant("acme"))] == [
        "acme"
    ]
    faces_doc = stack.jobs.get("r:faces-1")
    assert faces_doc is not None and faces_doc.inputs["image"] == ERASED  # its reference went with it
    run(stack, "search", {"gallery": "watch", "probe": second, "include_features": "true"}, "r:search-2")
    client.xadd(intake, {"kind": "search", "gallery": "watch", "probe": second})

    forgot = run(stack, "forget", {"face_id": "subject-1"}, "r:forget")
    assert forgot.result is not None and forgot.result["galleries"] == ["watch"]
    redis_values, objects = redis_contents(client), every_version(s3)
    assert traces(redis_values, objects, second) == []
    assert traces(redis_values, objects, first) == ["kyc:intake"]  # acme's entry, still
    # The other subject is untouched, and the scan still finds a template where one is.
    assert "kyc:job:r:faces-other" in traces(redis_values, objects, kept)
    assert any(holds({k.decode(): v.decode() for k, v in f.items()}, {features.digest_of_string(kept)},
                     DEFAULT_TENANT) for _, f in client.xrange(intake))  # fmt: skip

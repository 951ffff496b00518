"""Erasure everywhere: after a gallery ``delete`` or a ``forget``, a subject's template is in no
Redis key and no S3 object; job documents never held it in their inputs; archived results expire.

Real models and images, real Redis, the moto S3 endpoint; the jobs run through the job runner in
this process (no worker: the Celery message carries only the job id).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from harness import S3Endpoint
from shared import features
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.gallery import KYCDeepFaceDB
from shared.jobs import JobDocument, JobStatus, JobStore
from shared.jobs.archive import EXPIRY_TAG, expiry_days, lifecycle_rule
from shared.jobs.resources import Resources
from shared.jobs.runner import execute
from shared.schemas import FacesResult
from shared.storage.s3 import s3_client
from shared.tenants import DEFAULT_TENANT, Tenant
from tests.conftest import FACES_DIR

pytestmark = [pytest.mark.services, pytest.mark.slow]

SELFIE, DOCUMENT, OTHER = "fr_obama.jpg", "fr_obama2.jpg", "fr_biden.jpg"


@pytest.fixture()
def stack(settings: Settings, redis_url: str, s3: S3Endpoint, engine: KYCDeepFace) -> Iterator[Resources]:
    client = s3_client(Settings(s3_endpoint_url=s3.url))
    for name in (SELFIE, DOCUMENT, OTHER):
        client.put_object(Bucket=s3.bucket, Key=f"faces/{name}", Body=(FACES_DIR / name).read_bytes())
    stack_settings = settings.model_copy(
        update={
            "redis_url": redis_url,
            "gallery_store": "redis",
            "result_store": "both",
            "s3_endpoint_url": s3.url,
            "s3_bucket": s3.bucket,
            "s3_results_bucket": s3.results_bucket,
        }
    )
    resources = Resources(stack_settings, engine=engine)
    yield resources
    resources.close()


def ref(s3: S3Endpoint, name: str) -> str:
    return f"s3://{s3.bucket}/faces/{name}"


def run(
    resources: Resources, kind: str, inputs: dict[str, str], job_id: str, tenant: Tenant = DEFAULT_TENANT
) -> JobDocument:
    jobs = resources.jobs
    created, _ = jobs.create(JobDocument.new(kind, inputs, job_id, tenant))
    execute(created.address, resources, lock_ttl_s=60)
    doc = jobs.get(created.address)
    assert doc is not None and doc.status.terminal, doc
    return doc


def redis_contents(client: redis.Redis) -> dict[str, bytes]:
    """Every key's whole value, by type (DUMP compresses, so a needle could hide in it)."""
    out: dict[str, bytes] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            parts = [client.get(key) or b""]
        elif kind == "hash":
            parts = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "list":
            parts = client.lrange(key, 0, -1)
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "zset":
            parts = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            parts = [b for _, fields in client.xrange(key) for pair in fields.items() for b in pair]
        else:
            raise AssertionError(f"{key!r}: unexpected type {kind}")
        out[key.decode()] = b"\0".join(parts)
    return out


def s3_contents(s3: S3Endpoint) -> dict[str, bytes]:
    client = s3_client(Settings(s3_endpoint_url=s3.url))
    out: dict[str, bytes] = {}
    for bucket in s3.buckets():
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                out[f"s3://{bucket}/{item['Key']}"] = body
    return out


def needles(text: str) -> list[bytes]:
    """The features string, its vector's raw float32 bytes, and windows of its base64 that fall
    in the vector (so a copy sealed under another key id is found too)."""
    decoded = features.decode(text, sealed=False)
    raw = decoded.vector.astype("<f4").tobytes()
    start = 4 + len(decoded.model_id) + 2  # the vector's first byte in the blob
    first, last = -(-start // 3) * 4, (start + len(raw)) // 3 * 4  # whole base64 quanta inside it
    windows = [text[i : i + 24].encode() for i in range(first, last - 24, 24)]
    # The same vector at each base64 alignment, as any base64 encoding of a blob holding it.
    aligned = [base64.b64encode(b"\0" * k + raw).decode()[8:-8].encode() for k in range(3)]
    return [text.encode(), raw, *windows, *aligned]


def holders(contents: dict[str, bytes], text: str) -> list[str]:
    found = needles(text)
    return sorted(name for name, value in contents.items() if any(n in value for n in found))


def test_forget_leaves_the_template_in_no_redis_key_and_no_s3_object(stack: Resources, s3: S3Endpoint) -> None:
    faces = run(stack, "faces", {"image": ref(s3, SELFIE)}, "case-1:faces")
    template = FacesResult.model_validate(faces.result).faces[0].template()
    other = FacesResult.model_validate(run(stack, "faces", {"image": ref(s3, OTHER)}, "case-2:faces").result)
    kept_template = other.faces[0].template()
    run(stack, "enroll", {"gallery": "watch", "face_id": "subject-1", "probe": template}, "case-1:enroll-watch")
    run(stack, "enroll", {"gallery": "watch", "face_id": "subject-2", "probe": kept_template}, "case-2:enroll")
    enrolled = run(
        stack,
        "enroll",
        {"gallery": "customers", "face_id": "subject-1", "probe": ref(s3, SELFIE), "include_features": "true"},
        "case-1:enroll-customers",
    )
    assert enrolled.result is not None and enrolled.result["features"] == template  # asked for: kept
    search = run(stack, "search", {"gallery": "watch", "probe": template, "include_features": "true"}, "case-1:search")
    assert search.result is not None and search.result["candidates"][0]["face_id"] == "subject-1"
    verify = run(
        stack,
        "verify",
        {"selfie": ref(s3, SELFIE), "document": ref(s3, DOCUMENT), "include_features": "true"},
        "case-1:verify",
    )
    plain = run(stack, "verify", {"selfie": ref(s3, SELFIE), "document": ref(s3, DOCUMENT)}, "case-1:verify-plain")
    match = run(stack, "match", {"features1": template, "features2": kept_template}, "case-1:match")
    assert {d.status for d in (verify, plain, match)} == {JobStatus.SUCCEEDED}
    # A search still waiting in the queue holds its probe beside its document.
    waiting, _ = stack.jobs.create(JobDocument.new("search", {"gallery": "watch", "probe": template}, "case-1:queued"))

    client = redis.Redis.from_url(str(stack.settings.redis_url))
    before_redis, before_s3 = holders(redis_contents(client), template), holders(s3_contents(s3), template)
    # Positive controls: the walk finds the template where it must be before the erasure ...
    assert "kyc:job:case-1:faces" in before_redis
    # (the galleries hold it encrypted: no template bytes, but one that decrypts to it)
    assert not [k for k in before_redis if k.startswith("kyc:gallery:")]
    assert KYCDeepFaceDB("watch", settings=stack.settings).templates(["subject-1"]) == {"subject-1": template}
    assert "kyc:job-features:case-1:queued" in before_redis
    assert f"s3://{s3.results_bucket}/results/case-1:verify.json" in before_s3
    # ... and never in documents that did not ask for it: inputs name probes by digest.
    for doc in (match, plain, run(stack, "delete", {"gallery": "nowhere", "face_id": "x"}, "noop")):
        assert not holders({doc.job_id: doc.to_json().encode()}, template), doc.kind
    assert match.inputs["features1"] == features.digest(features.decode(template))

    other_process = KYCDeepFaceDB("watch", settings=stack.settings)  # another worker's warm index
    assert other_process.find_face(template)["found"] == "subject-1"
    forgot = run(stack, "forget", {"face_id": "subject-1"}, "case-1:forget")

    assert forgot.result is not None and forgot.result["galleries"] == ["customers", "watch"]
    assert forgot.result["documents_redacted"] >= 5
    assert holders(redis_contents(client), template) == []
    assert holders(s3_contents(s3), template) == []
    # The other subject is untouched, and the check can still see a template where one is.
    assert "kyc:job:case-2:faces" in holders(redis_contents(client), kept_template)
    assert client.hexists("kyc:gallery:{watch}:faces", "subject-2")
    # Every index drops it through the change log; redacted results keep everything else.
    assert other_process.find_face(template)["found"] is None
    assert other_process.find_face(kept_template)["found"] == "subject-2"
    other_process.close()
    redacted = stack.jobs.get("case-1:verify")
    assert redacted is not None and redacted.result is not None and redacted.result["verified"] is True
    assert redacted.result["selfie"]["faces"][0]["features"] is None
    # The waiting search fails as erased instead of running on the template.
    execute(waiting.job_id, stack, lock_ttl_s=60)
    failed = stack.jobs.get(waiting.job_id)
    assert failed is not None and failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error.type == "FeaturesError" and "erased" in failed.error.message


def test_delete_erases_the_template_from_the_gallery_and_the_results_holding_it(
    stack: Resources, s3: S3Endpoint
) -> None:
    faces = run(stack, "faces", {"image": ref(s3, OTHER)}, "b:faces")
    template = FacesResult.model_validate(faces.result).faces[0].template()
    run(stack, "enroll", {"gallery": "customers", "face_id": "c-9", "probe": template}, "b:enroll")
    deleted = run(stack, "delete", {"gallery": "customers", "face_id": "c-9"}, "b:delete")
    assert deleted.result == {
        "code": "SUCCESS",
        "gallery": "customers",
        "face_id": "c-9",
        "deleted": True,
        "documents_redacted": 2,  # the faces result, and the enrolment whose probe digest named it
    }
    client = redis.Redis.from_url(str(stack.settings.redis_url))
    assert holders(redis_contents(client), template) == [] and holders(s3_contents(s3), template) == []
    again = run(stack, "delete", {"gallery": "customers", "face_id": "c-9"}, "b:delete-again")
    assert again.result is not None and (again.result["deleted"], again.result["documents_redacted"]) == (False, 0)


def test_archived_results_carry_the_expiry_a_lifecycle_rule_acts_on(stack: Resources, s3: S3Endpoint) -> None:
    run(stack, "faces", {"image": ref(s3, OTHER)}, "c:faces")
    client = s3_client(Settings(s3_endpoint_url=s3.url))
    tags = client.get_object_tagging(Bucket=s3.results_bucket, Key="results/c:faces.json")["TagSet"]
    days = expiry_days(stack.settings.job_ttl_s)
    assert tags == [{"Key": EXPIRY_TAG, "Value": str(days)}] and days == int(np.ceil(stack.settings.job_ttl_s / 86400))
    # The rule the docs give for AWS and docker compose gives MinIO, accepted by an S3 API.
    rule = lifecycle_rule(stack.settings.job_ttl_s)
    client.put_bucket_lifecycle_configuration(Bucket=s3.results_bucket, LifecycleConfiguration={"Rules": [rule]})
    (stored,) = client.get_bucket_lifecycle_configuration(Bucket=s3.results_bucket)["Rules"]
    assert stored["Expiration"] == {"Days": days} and stored["Filter"]["Tag"] == tags[0]
    # A redacted result is rewritten with the same tag, so it still expires.
    stack.jobs.archive.replace(stack.jobs.get("c:faces"))  # type: ignore[union-attr, arg-type]
    assert client.get_object_tagging(Bucket=s3.results_bucket, Key="results/c:faces.json")["TagSet"] == tags


def test_job_documents_hold_probe_digests_and_the_store_drops_probes_when_final(stack: Resources) -> None:
    store: JobStore = stack.jobs
    probe = features.encode(stack.engine.model_id, np.random.default_rng(3).standard_normal(512))
    doc = JobDocument.new("search", {"gallery": "empty", "probe": probe}, "d:search")
    assert doc.inputs["probe"] == features.digest(features.decode(probe)) and probe not in doc.to_json()
    store.create(doc)
    client = store.redis
    assert client.hget(f"kyc:job-features:{doc.job_id}", doc.inputs["probe"]) == probe.encode()
    execute(doc.job_id, stack, lock_ttl_s=60)
    final = store.get(doc.job_id)
    # Nothing was ever enrolled in "empty": the search fails (GalleryNotFoundError), and is final.
    assert final is not None and final.status is JobStatus.FAILED and final.error is not None, final
    assert final.error.type == "GalleryNotFoundError"
    assert not client.exists(f"kyc:job-features:{doc.job_id}")
    # An idempotent resubmit is recognised by the digest.
    again, created = store.create(JobDocument.new("search", {"gallery": "empty", "probe": probe}, "d:search"))
    assert not created and again.same_request(doc)


def test_forget_stays_within_its_tenant(stack: Resources, s3: S3Endpoint) -> None:
    acme = Tenant("acme")
    faces = run(stack, "faces", {"image": ref(s3, SELFIE)}, "t:faces")
    template = FacesResult.model_validate(faces.result).faces[0].template()
    theirs = run(stack, "faces", {"image": ref(s3, SELFIE)}, "t:faces", acme)  # the same face, another tenant
    run(stack, "enroll", {"gallery": "watch", "face_id": "subject-1", "probe": template}, "t:enroll")
    acme_template = features.seal_for(template, acme)  # what acme's own faces job gave it
    run(stack, "enroll", {"gallery": "watch", "face_id": "subject-1", "probe": acme_template}, "t:enroll", acme)
    forgot = run(stack, "forget", {"face_id": "subject-1"}, "t:forget")
    assert forgot.result is not None and forgot.result["galleries"] == ["watch"]
    assert forgot.result["documents_redacted"] == 2  # the faces result and the enrolment, not acme's
    kept = stack.jobs.get(theirs.address)
    assert kept is not None and kept.result == theirs.result  # acme's result untouched
    with KYCDeepFaceDB("acme/watch", settings=stack.settings) as acme_watch:
        assert acme_watch.templates(["subject-1"]) == {"subject-1": template}

"""Backlogs that scale: the window bound, resuming after an interrupt, summary columns, S3 manifests.

The window and resume tests run the real backlog loop on a stub runner (plumbing only: it
answers every job with a canned ``SUCCESS`` document, no model); the e2e test checks the
window against Redis with a real worker.
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import boto3
import pytest
import redis

from harness import S3Endpoint
from shared import features, keys
from shared.backlog.manifest import ManifestRow, iter_manifest
from shared.backlog.output import STATE_FILE, SUMMARY_FIELDS
from shared.backlog.queued import QueuedRunner
from shared.backlog.run import run_backlog
from shared.backlog.window import run_window
from shared.config import Settings
from shared.errors import JobError
from shared.jobs import JobDocument
from shared.producer import Producer
from shared.tenants import DEFAULT_TENANT, scoped
from tests.conftest import FACES_DIR, celery_worker, features_of, need, pipeline_env


class StubRunner:
    """Answers a job ``lag`` waiting polls after it started, and records the most jobs ever in
    flight and how full the window was at each poll."""

    def __init__(self, lag: int = 2) -> None:
        self.lag = lag
        self.started: list[str] = []
        self.in_flight: dict[str, int] = {}
        self.most_in_flight = 0
        self.polls: list[tuple[int, bool]] = []
        self._jobs: dict[str, JobDocument] = {}

    def start_many(self, jobs: Sequence[JobDocument]) -> list[JobDocument | None]:
        for job in jobs:
            self.started.append(job.job_id)
            self.in_flight[job.job_id] = 0
            self._jobs[job.job_id] = job
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        return [None] * len(jobs)

    def poll(self, job_ids: Sequence[str], wait: bool = True) -> list[JobDocument]:
        self.polls.append((len(self.in_flight), wait))
        done = []
        for job_id in job_ids:
            self.in_flight[job_id] += wait  # jobs advance while the window waits, not when it only reads
            if self.in_flight[job_id] >= self.lag:
                del self.in_flight[job_id]
                job = self._jobs.pop(job_id)
                done.append(job.succeeded({"code": "NO_FACE", "confidence": None, "verified": False}))
        return done

    def close(self) -> None:
        pass


def manifest(path: Path, rows: int) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "selfie", "document", "branch"])
        writer.writerows([f"case-{i}", f"s/{i}.jpg", f"d/{i}.jpg", f"b{i % 3}"] for i in range(rows))
    return path


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_window_bounds_the_jobs_in_flight(tmp_path: Path) -> None:
    runner = StubRunner(lag=3)
    rows = iter_manifest(manifest(tmp_path / "m.csv", 500))
    answered = list(run_window(rows, runner, size=7))
    assert runner.most_in_flight == 7
    # Filled a quarter at a time, reading answers in between without waiting, until full.
    assert runner.polls[:7] == [(1, False), (2, False), (3, False), (4, False), (5, False), (6, False), (7, True)]
    assert [row.columns["case_id"] for row, _ in answered] == [f"case-{i}" for i in range(500)]


def test_the_manifest_is_read_as_the_window_moves(tmp_path: Path) -> None:
    read_rows = 0

    def counted(rows: Iterator[ManifestRow]) -> Iterator[ManifestRow]:
        nonlocal read_rows
        for row in rows:
            read_rows += 1
            yield row

    runner = StubRunner(lag=1)
    answers = run_window(counted(iter_manifest(manifest(tmp_path / "m.csv", 100))), runner, size=5)
    next(answers)
    assert read_rows <= 6


def test_the_summary_carries_the_manifest_columns(tmp_path: Path) -> None:
    path = manifest(tmp_path / "m.csv", 4)
    report = run_backlog(iter_manifest(path), tmp_path / "out", Settings(), str(path), runner=StubRunner())
    summary = read(report.summary)
    assert list(summary[0]) == ["case_id", "selfie", "document", "branch", *SUMMARY_FIELDS]
    # As the manifest wrote them (relative), and a refusal is "not verified", not blank.
    assert (summary[2]["selfie"], summary[2]["branch"], summary[2]["code"]) == ("s/2.jpg", "b2", "NO_FACE")
    assert {row["verified"] for row in summary} == {"false"}


def test_a_resumed_backlog_redoes_nothing_finished(tmp_path: Path) -> None:
    path, out = manifest(tmp_path / "m.csv", 300), tmp_path / "out"
    first = StubRunner()
    answered = 0

    def interrupt(_doc: JobDocument) -> None:
        nonlocal answered
        answered += 1
        if answered == 123:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_backlog(iter_manifest(path), out, Settings(), str(path), interrupt, window=20, runner=first)
    partial = read(out / "summary.csv")
    assert 0 < len(partial) < 123
    assert (out / STATE_FILE).is_file()

    second = StubRunner()
    report = run_backlog(iter_manifest(path), out, Settings(), str(path), window=20, runner=second)
    finished_before = {p.stem for p in out.glob("*.json")} - set(second.started)
    assert len(finished_before) >= 122  # the interrupting answer's document may not be written
    assert not set(first.started[:122]) & set(second.started)
    assert report.resumed == len(partial) and report.rows == 300
    summary = read(out / "summary.csv")
    assert [row["case_id"] for row in summary] == [f"case-{i}" for i in range(300)]  # each row once, in order


def test_a_manifest_from_s3_and_a_listed_prefix(s3: S3Endpoint) -> None:
    settings = Settings(s3_endpoint_url=s3.url, s3_bucket=s3.bucket)  # type: ignore[arg-type]
    bucket = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1")
    body = "selfie,document,case_id\nin/a.jpg,s3://kyc-images/x/b.jpg,c1\n"
    bucket.put_object(Bucket=s3.bucket, Key="batches/m.csv", Body=body.encode())
    rows = list(iter_manifest(f"s3://{s3.bucket}/batches/m.csv", settings))
    assert rows[0].job.inputs == {
        "selfie": "s3://kyc-images/batches/in/a.jpg",
        "document": "s3://kyc-images/x/b.jpg",
        "include_features": "false",
    }
    assert rows[0].columns == {"selfie": "in/a.jpg", "document": "s3://kyc-images/x/b.jpg", "case_id": "c1"}

    for key in ("cases/c1/selfie.jpg", "cases/c1/document.png", "cases/c2/selfie.jpg", "cases/c3/document.jpg",
                "cases/c3/selfie.webp", "cases/c3/notes.txt"):  # fmt: skip
        bucket.put_object(Bucket=s3.bucket, Key=key, Body=b"x")
    listed = list(iter_manifest(f"s3://{s3.bucket}/cases/", settings))
    assert [row.columns for row in listed] == [
        {
            "case_id": "c1",
            "selfie": "s3://kyc-images/cases/c1/selfie.jpg",
            "document": "s3://kyc-images/cases/c1/document.png",
        },
        {
            "case_id": "c3",
            "selfie": "s3://kyc-images/cases/c3/selfie.webp",
            "document": "s3://kyc-images/cases/c3/document.jpg",
        },
    ]  # fmt: skip; c2 has no document


# -- the window against Redis, with a real worker -------------------------------------------------


@pytest.mark.e2e
@pytest.mark.services
@pytest.mark.slow
def test_the_window_holds_in_redis(broker_url: str, s3_server: S3Endpoint, tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    need(FACES_DIR.is_dir(), f"face photos not found at {FACES_DIR}")
    a, b = features_of(engine, "fr_obama.jpg"), features_of(engine, "fr_obama2.jpg")
    env = pipeline_env(broker_url, s3_server)
    settings = Settings(broker_url=broker_url)
    client = redis.Redis.from_url(broker_url)
    size, seen = 15, []
    stop = threading.Event()

    def watch() -> None:
        # Every job of this test is in flight from its submit to its terminal document. One MGET
        # is a snapshot: documents read one by one could each be in flight at a different time.
        while not stop.is_set():
            names = client.keys(keys.JOB_PREFIX + "*")
            raws = client.mget(names) if names else []
            docs = [JobDocument.from_json(r) for r in raws if r is not None]
            seen.append(sum(not d.status.terminal for d in docs))

    rows = (ManifestRow(i, JobDocument.new("match", {"features1": a, "features2": b}, f"w-{i}")) for i in range(200))
    with celery_worker(env, tmp_path, concurrency=1):
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            runner = QueuedRunner(Producer(settings), poll_s=0.05, result_ttl_s=60)
            answers = list(run_window(rows, runner, size, timeout_s=120))
        finally:
            stop.set()
            watcher.join()
    assert len(answers) == 200 and {doc.status.value for _, doc in answers} == {"succeeded"}
    assert max(seen) <= size and len(seen) >= 3
    # Read answers leave Redis soon (the backlog keeps them on disk), not after KYC_JOB_TTL_S.
    assert 0 < client.ttl(keys.job_key("w-0")) <= 60
    # And so do the keys kept beside each job for as long: nothing of a read answer stays a week.
    assert 0 < client.ttl(keys.job_attempts_key("w-0")) <= 60
    assert 0 < client.ttl(keys.job_published_key("w-0")) <= 60
    # Nor their entries in the erasure index (the probes' digests): it kept one per job for a week.
    for probe in (a, b):
        index = keys.features_jobs_key(scoped(DEFAULT_TENANT, features.digest(features.decode(probe))))
        assert not any(client.smismember(index, [f"w-{i}" for i in range(200)]))


def _finish(producer: Producer, job: JobDocument) -> None:
    """Write ``job``'s terminal document as a worker would (no worker: plumbing of the poller)."""
    producer.jobs.finish(job.succeeded({"code": "NO_FACE", "confidence": None, "verified": False}), token=None)


def test_the_poller_reads_the_oldest_pending_jobs_and_finds_every_answer(redis_url: str) -> None:
    from shared.backlog.queued import MIN_POLL_SPAN

    producer = Producer(Settings(broker_url=redis_url))
    jobs = [JobDocument.new("faces", {"image": f"s3://photos/{i}.jpg"}, f"poll-{i}") for i in range(300)]
    for job in jobs:
        producer.jobs.create(job)
    runner = QueuedRunner(producer, poll_s=0)
    ids = [j.job_id for j in jobs]
    # Jobs 0-9 and 250 are done: the first round reads only the oldest MIN_POLL_SPAN.
    for job in [*jobs[:10], jobs[250]]:
        _finish(producer, job)
    assert [d.job_id for d in runner.poll(ids)] == ids[:10]
    assert runner._span == max(MIN_POLL_SPAN, 20)
    # Everything read was done: the span doubles until it reaches the late one.
    for job in jobs[10:250]:
        _finish(producer, job)
    found: list[str] = []
    pending = ids[10:]
    while "poll-250" not in found:
        got = [d.job_id for d in runner.poll(pending)]
        found += got
        pending = [i for i in pending if i not in got]
    assert found == ids[10:251]
    assert runner.poll(pending) == []


def test_an_expired_pending_job_is_an_error_not_a_hang(redis_url: str) -> None:
    producer = Producer(Settings(broker_url=redis_url))
    runner = QueuedRunner(producer, poll_s=0)
    with pytest.raises(JobError, match="disappeared"):
        runner.poll(["never-submitted"])

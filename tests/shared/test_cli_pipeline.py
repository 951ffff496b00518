"""``kycface backlog`` and friends as a user runs them: subprocesses, files in, files out.

The embedded default (no broker) needs nothing but the models and the photos; the queued mode
and ``submit``/``status``/``wait`` run against a real Celery worker and must give the same
documents.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import S3Endpoint
from shared.backlog.manifest import backlog_job_id
from shared.backlog.output import SUMMARY_FIELDS
from shared.config import Settings
from shared.jobs import JobDocument
from shared.jobs.resources import Resources
from shared.jobs.runner import run_job
from shared.storage import LocalStore
from tests.conftest import FACES_DIR, celery_worker, need, pipeline_env

SAME = ("df_img11.jpg", "df_img5.jpg")
DIFFERENT = ("fr_obama.jpg", "fr_biden.jpg")
TWO_FACES = ("fr_two_people.jpg", "fr_obama.jpg")


def kycface(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env if env is not None else embedded_env(),
    )


def embedded_env() -> dict[str, str]:
    """The caller's environment without any KYC_* setting: no broker, so the embedded default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
    env["KYC_MODEL_DIR"] = str(Settings().model_dir)
    return env


def read_summary(out: Path) -> list[dict[str, str]]:
    with (out / "summary.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def manifest(tmp_path: Path, settings: Settings) -> Path:
    """Absolute paths, a path relative to the manifest, a given job id, a duplicate and a missing file."""
    need(FACES_DIR.is_dir(), f"face photos not found at {FACES_DIR}")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(FACES_DIR / DIFFERENT[1], photos / DIFFERENT[1])
    rows = [
        ["selfie", "document", "job_id", "note"],
        [str(FACES_DIR / SAME[0]), str(FACES_DIR / SAME[1]), "", "same person"],
        [str(FACES_DIR / DIFFERENT[0]), f"photos/{DIFFERENT[1]}", "", "relative path"],
        [str(FACES_DIR / TWO_FACES[0]), str(FACES_DIR / TWO_FACES[1]), "case-7:verify", "given id"],
        [str(FACES_DIR / SAME[0]), str(FACES_DIR / SAME[1]), "", "duplicate of row 1"],
        [str(tmp_path / "missing.jpg"), str(FACES_DIR / SAME[1]), "", "missing file"],
    ]
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_embedded_backlog_answers_every_row_in_order(manifest: Path, tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    run = kycface("backlog", str(manifest), "--out", str(out), "--processes", "2")
    assert run.returncode == 0, run.stderr
    assert "5 rows, 4 jobs (embedded; 0 from a previous run, 0 rows resumed): 1 failed, 3 succeeded" in run.stdout
    assert "4job" in run.stderr.replace(" ", "")  # the progress bar goes to stderr

    summary = read_summary(out)
    # The manifest's own columns as written (a relative path stays relative), then the outcome.
    assert list(summary[0]) == ["selfie", "document", "job_id", "note", "status", "code", "confidence", "verified"]
    assert [row["note"] for row in summary][:2] == ["same person", "relative path"]
    assert summary[1]["document"] == f"photos/{DIFFERENT[1]}"
    same, different, two_faces, duplicate, missing = summary
    assert (same["status"], same["code"], same["verified"]) == ("succeeded", "SUCCESS", "true")
    assert float(same["confidence"]) >= 0.76
    assert (different["status"], different["code"], different["verified"]) == ("succeeded", "SUCCESS", "false")
    assert float(different["confidence"]) < 0.76
    assert {k: two_faces[k] for k in SUMMARY_FIELDS} == {
        "job_id": "case-7:verify", "status": "succeeded", "code": "MULTIPLE_FACES", "confidence": "", "verified": "false",
    }  # fmt: skip
    assert {k: duplicate[k] for k in SUMMARY_FIELDS} == {k: same[k] for k in SUMMARY_FIELDS}
    assert (missing["status"], missing["code"], missing["verified"]) == ("failed", "ERROR", "")

    expected_id = backlog_job_id("verify", {"selfie": str(FACES_DIR / SAME[0]), "document": str(FACES_DIR / SAME[1])})
    assert same["job_id"] == expected_id
    assert sorted(p.name for p in out.glob("*.json")) == sorted(
        f"{r['job_id']}.json" for r in summary if r is not duplicate
    )

    # Each document holds what the engine answers in-process for the same files.
    local = LocalStore(max_bytes=50 * 1024 * 1024)
    for row in (same, different, two_faces):
        doc = JobDocument.from_json((out / f"{row['job_id']}.json").read_bytes())
        assert doc.kind == "verify" and doc.attempts == 1
        assert doc.result == run_job(doc.kind, doc.inputs, Resources(engine.settings, engine=engine, images=local))
    failed = JobDocument.from_json((out / f"{missing['job_id']}.json").read_bytes())
    assert failed.error is not None and "missing.jpg" in failed.error.message


def test_embedded_backlog_rerun_is_idempotent(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert kycface("backlog", str(manifest), "--out", str(out), "-q").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = kycface("backlog", str(manifest), "--out", str(out), "-q")
    assert again.returncode == 0, again.stderr
    assert "5 rows resumed" in again.stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_bad_manifest_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(f"selfie,document\n{FACES_DIR / SAME[0]},s3://kyc-images/../secrets\n")
    run = kycface("backlog", str(bad), "--out", str(tmp_path / "out"))
    assert run.returncode == 1
    assert f"{bad}:2" in run.stderr and "'..'" in run.stderr
    headless = tmp_path / "headless.csv"
    headless.write_text("a.jpg,b.jpg\n")
    run = kycface("backlog", str(headless), "--out", str(tmp_path / "out"))
    assert run.returncode == 1 and "selfie, document" in run.stderr


def test_sample_manifest_then_backlog_is_the_readme_demo(tmp_path: Path) -> None:
    need(FACES_DIR.is_dir(), f"face photos not found at {FACES_DIR}")
    manifest, out = tmp_path / "m.csv", tmp_path / "out"
    made = kycface("sample-manifest", "--out", str(manifest), "--faces-dir", str(FACES_DIR))
    assert made.returncode == 0, made.stderr
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and set(rows[0]) == {"selfie", "document"}
    run = kycface("backlog", str(manifest), "--out", str(out), "-q")
    assert run.returncode == 0, run.stderr
    summary = read_summary(out)
    assert len(summary) == len(rows)
    verdicts = {r["verified"] for r in summary}
    assert {"true", "false"} <= verdicts
    assert {"MULTIPLE_FACES", "NO_FACE"} <= {r["code"] for r in summary}


# -- queued mode: the same documents from a real Celery worker ------------------------------------


@pytest.fixture(scope="module")
def queued_env(
    broker_url: str, s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    # The manifest names photos under ../shared and the test's temporary directory: a worker reads
    # local files only under a configured root, here the filesystem's.
    env = pipeline_env(broker_url, s3_server, KYC_LOCAL_STORAGE_ROOT="/")
    with celery_worker(env, tmp_path_factory.mktemp("worker"), concurrency=1):
        yield env


@pytest.mark.e2e
@pytest.mark.services
@pytest.mark.slow
def test_queued_backlog_writes_the_same_documents(manifest: Path, tmp_path: Path, queued_env: dict[str, str]) -> None:
    embedded, queued = tmp_path / "embedded", tmp_path / "queued"
    assert kycface("backlog", str(manifest), "--out", str(embedded), "-q").returncode == 0
    run = kycface("backlog", str(manifest), "--out", str(queued), "-q", "--timeout", "120", env=queued_env)
    assert run.returncode == 0, run.stderr
    assert "queued" in run.stdout
    assert read_summary(queued) == read_summary(embedded)
    for path in embedded.glob("*.json"):
        a, b = (JobDocument.from_json(p.read_bytes()) for p in (path, queued / path.name))
        assert (b.status, b.result, b.error, b.inputs) == (a.status, a.result, a.error, a.inputs)


@pytest.mark.e2e
@pytest.mark.services
@pytest.mark.slow
def test_submit_status_wait(queued_env: dict[str, str]) -> None:
    image = str(FACES_DIR / "fr_obama.jpg")
    submitted = kycface("submit", "faces", image, "--job-id", "cli-1", env=queued_env)
    assert submitted.returncode == 0, submitted.stderr
    doc = json.loads(submitted.stdout)
    assert (doc["job_id"], doc["kind"], doc["inputs"]) == ("cli-1", "faces", {"image": image})
    final = kycface("wait", "cli-1", "--timeout", "120", env=queued_env)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["status"] == "succeeded"
    status = kycface("status", "cli-1", env=queued_env)
    assert json.loads(status.stdout) == json.loads(final.stdout)
    unknown = kycface("status", "never-submitted", env=queued_env)
    assert unknown.returncode == 1 and "no job" in unknown.stderr
    # Every registered kind has its submit command, the gallery kinds included.
    search = kycface("submit", "search", "customers", image, "--job-id", "cli-2", env=queued_env)
    assert search.returncode == 0, search.stderr
    inputs = json.loads(search.stdout)["inputs"]
    assert inputs == {
        "gallery": "customers",
        "probe": image,
        "top_k": "10",
        "include_features": "false",
        "near_misses": "false",
    }


def test_a_misspelt_setting_stops_the_command_naming_the_real_one() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")} | {"KYC_BROKR_URL": "redis://x"}
    done = kycface("status", "x", env=env)
    assert done.returncode == 78 and "did you mean KYC_BROKER_URL?" in done.stderr  # EX_CONFIG


def test_pipeline_commands_without_a_broker_say_so() -> None:
    # A service refuses to start (78, EX_CONFIG); a one-shot command could not do its work (1).
    for args, status in ((("worker",), 78), (("status", "x"), 1), (("submit", "faces", "a.jpg"), 1)):
        run = kycface(*args)
        assert run.returncode == status
        assert "KYC_BROKER_URL" in run.stderr


@pytest.mark.services
def test_queued_backlog_timeout_leaves_a_partial_summary(manifest: Path, tmp_path: Path, redis_url: str) -> None:
    # A broker, but no worker listening; the submitting side checks local paths against the root.
    env = {**embedded_env(), "KYC_BROKER_URL": redis_url, "KYC_LOCAL_STORAGE_ROOT": "/"}
    out = tmp_path / "out"
    run = kycface("backlog", str(manifest), "--out", str(out), "-q", "--timeout", "0.5", env=env)
    assert run.returncode == 1
    assert "5 rows still pending" in run.stderr and "partial summary" in run.stderr
    assert read_summary(out) == []  # only answered rows are written; a re-run continues from here


@pytest.mark.parametrize(
    ("argv", "env", "pool", "concurrency"),
    [
        (["worker", "-c", "3"], {}, "prefork", "3"),
        (["worker", "--pool", "solo", "-c", "3"], {}, "solo", "1"),
        (["worker"], {"KYC_WORKER_POOL": "solo"}, "solo", "1"),
    ],
)
def test_the_worker_command_starts_the_pool_asked_for(
    argv: list[str], env: dict[str, str], pool: str, concurrency: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.cli import celery_cmds
    from shared.cli import main as cli
    from shared.config import get_settings
    from workers import startup

    monkeypatch.setenv("KYC_BROKER_URL", "redis://127.0.0.1:1/0")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    started: list[list[str]] = []
    checked: list[Settings] = []

    # Plumbing only: what would reach Celery, without the broker, the checks or a signal handler.
    def run_celery(argv: list[str]) -> int:
        started.append(argv)
        return 0

    monkeypatch.setattr(celery_cmds, "run_celery", run_celery)
    monkeypatch.setattr(celery_cmds, "stop_cleanly_on_sigterm", lambda: None)
    monkeypatch.setattr(startup, "check", checked.append)
    monkeypatch.setattr(startup, "check_broker", lambda app: None)
    try:
        assert cli.main(argv) == 0
    finally:
        get_settings.cache_clear()
    assert f"--pool={pool}" in started[0] and f"--concurrency={concurrency}" in started[0]
    assert checked[0].worker_concurrency == int(concurrency)  # checked as it will run

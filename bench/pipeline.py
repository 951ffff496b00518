"""End-to-end pipeline throughput against the in-process engine, measured in the same run.

Usage::

    python bench/pipeline.py [--jobs 200] [--faces ../shared/faces] [--latency 20] [--results bench/RESULTS.md]

Setup, all on loopback and private to this run: a redis-server on a free port (broker and job
documents), moto's S3 server in this process with the photos uploaded, and one
``celery -A workers worker`` with concurrency = cores (one onnxruntime thread per process).
``--jobs`` faces jobs are submitted at once through the producer; throughput is jobs / (last
``finished_at`` - first ``created_at``). The baseline is ``engine.get_faces`` over the same bytes
in this process (onnxruntime threads = cores), after a warm-up pass.

Per-stage times come from the job documents (``queue_s``, ``fetch_s``, ``compute_s``) and the
worker's log (``write_s``: the terminal document's Redis transaction). ``--latency`` runs that
many single jobs one after another (submit, poll every 5 ms) for the unloaded round trip.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared import keys  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.jobs import JobDocument, JobStatus  # noqa: E402
from shared.producer import Producer  # noqa: E402

BUCKET = "kyc-images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start_worker(env: dict[str, str], concurrency: int, log_path: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "prefork", "-c", str(concurrency)]
    args += ["-Q", "kyc.heavy,kyc.light", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if " ready." in text and text.count("worker process ") >= concurrency:
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{text[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError("worker not ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def in_process(blobs: list[bytes], settings: Settings) -> float:
    """images/s of engine.get_faces in this process, warmed up."""
    from shared.engine import KYCDeepFace

    engine = KYCDeepFace(settings=settings.model_copy(update={"worker_concurrency": 1}))
    for data in set(blobs):
        engine.get_faces(data)
    start = time.perf_counter()
    for data in blobs:
        engine.get_faces(data)
    return len(blobs) / (time.perf_counter() - start)


def wait_all(producer: Producer, job_ids: list[str], timeout_s: float) -> list[JobDocument]:
    """Poll with one MGET per round: per-job GETs would steal CPU from the worker on a small box."""
    pending, done = list(job_ids), {}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs unfinished")
        raws = producer.jobs.redis.mget([keys.job_key(j) for j in pending])
        for job_id, raw in zip(list(pending), raws, strict=True):
            doc = JobDocument.from_json(raw) if raw is not None else None
            if doc is not None and doc.status.terminal:
                done[job_id] = doc
                pending.remove(job_id)
        time.sleep(0.1)
    return [done[j] for j in job_ids]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--latency", type=int, default=20)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--results", type=Path, default=None, help="write the Pipeline section of this file")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is not installed", file=sys.stderr)
        return 1
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log, one line per request

    files = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    names = [files[i % len(files)].name for i in range(args.jobs)]
    blobs = {p.name: p.read_bytes() for p in files}

    with tempfile.TemporaryDirectory(prefix="kyc-bench-") as tmp:
        redis_port, s3_port = free_port(), free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--maxmemory-policy", "noeviction", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
        moto.start()
        worker = None
        try:
            wait_port(redis_port)
            wait_port(s3_port)
            creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
            os.environ.update(creds)
            s3_url, broker = f"http://127.0.0.1:{s3_port}", f"redis://127.0.0.1:{redis_port}/0"
            client = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
            client.create_bucket(Bucket=BUCKET)
            for name, data in blobs.items():
                client.put_object(Bucket=BUCKET, Key=f"bench/{name}", Body=data)

            settings = Settings(broker_url=broker, s3_endpoint_url=s3_url, s3_bucket=BUCKET)
            baseline = in_process([blobs[n] for n in names], settings)

            env = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
            env.update(creds, KYC_BROKER_URL=broker, KYC_S3_ENDPOINT_URL=s3_url, KYC_S3_BUCKET=BUCKET)
            env["KYC_MODEL_DIR"] = str(settings.model_dir)
            log_path = Path(tmp) / "worker.log"
            worker = start_worker(env, args.concurrency, log_path)
            producer = Producer(settings)

            start = time.perf_counter()
            ids = [producer.submit_faces(f"s3://{BUCKET}/bench/{n}").job_id for n in names]
            submit_s = time.perf_counter() - start
            docs = wait_all(producer, ids, timeout_s=600)
            latency = []
            for i in range(args.latency):
                t0 = time.perf_counter()
                producer.wait_for(producer.submit_faces(f"s3://{BUCKET}/bench/{names[i]}").job_id, poll_s=0.005)
                latency.append(time.perf_counter() - t0)
            producer.close()
        finally:
            if worker is not None:
                stop(worker)
            moto.stop()
            redis_proc.terminate()
            redis_proc.wait()
        worker_log = log_path.read_text(errors="replace")

    failed = [d for d in docs if d.status is not JobStatus.SUCCEEDED]
    first = min(d.created_at for d in docs)
    last = max(d.finished_at for d in docs if d.finished_at is not None)
    pipeline = len(docs) / (last - first).total_seconds()
    stages = {k: [d.timings[k] for d in docs if k in d.timings] for k in ("queue_s", "fetch_s", "compute_s")}
    stages["write_s"] = [float(m) for m in re.findall(r"write_s=([0-9.]+)", worker_log)][: len(docs)]
    labels = {"queue_s": "queue wait", "fetch_s": "S3 fetch (HEAD+GET)", "compute_s": "compute (get_faces)"}
    labels["write_s"] = "result write (Redis)"

    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| in-process engine, 1 process x {os.cpu_count()} onnx threads | {baseline:.1f} images/s "
        f"({1000 / baseline:.1f} ms/image) |",
        f"| pipeline, 1 worker x {args.concurrency} processes x 1 onnx thread | {pipeline:.1f} images/s |",
        f"| ratio pipeline / in-process | {pipeline / baseline:.2f} |",
        f"| submit {len(docs)} jobs (producer) | {submit_s:.2f} s ({len(docs) / submit_s:.0f} jobs/s) |",
        f"| failed jobs | {len(failed)} |",
    ]
    if latency:
        rows.append(
            f"| single-job round trip, unloaded (median / p95 of {len(latency)}) | "
            f"{1000 * statistics.median(latency):.0f} / {1000 * pct(latency, 95):.0f} ms |"
        )
    rows += [
        "",
        "| stage, per job | median ms | p95 ms | mean ms |",
        "|---|---:|---:|---:|",
    ]
    for key, values in stages.items():
        if values:
            rows.append(
                f"| {labels[key]} | {1000 * statistics.median(values):.1f} | {1000 * pct(values, 95):.1f} | "
                f"{1000 * statistics.fmean(values):.1f} |"
            )
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
    command = "python bench/pipeline.py " + shlex.join(sys.argv[1:])
    text = (
        "## Pipeline\n\n"
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Command: `{command.strip()}`. "
        f"`nproc` = {os.cpu_count()}; {platform.python_version()} on {platform.machine()}. "
        f"{len(docs)} `faces` jobs over {len(files)} photos of `../shared/faces` (cycled), submitted at once. "
        "Redis, moto S3 and the worker on loopback; queue wait includes the backlog ahead of each job. "
        "Caveat: on a small machine the worker shares the cores with moto (a Python S3 server), Redis and "
        "the producer, so the S3 fetch stage is mostly their CPU time, not network; and each worker process "
        "runs onnxruntime on one thread, so its compute per image is slower than the in-process baseline's "
        "while the processes together use the same cores.\n\n"
        + "\n".join(rows)
        + "\n\n```\n"
        + "\n".join(lscpu)
        + "\n```\n"
    )
    print(text)
    if args.results:
        write_section(args.results, text)
    return 1 if failed else 0


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's ``## Pipeline`` section, leaving the others' sections alone."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## Pipeline\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


if __name__ == "__main__":
    sys.exit(main())

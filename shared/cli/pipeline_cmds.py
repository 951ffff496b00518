"""Pipeline commands: ``worker``, ``submit``, ``status``, ``wait``, ``api``, ``backlog`` and
``sample-manifest``. Job documents go to stdout as JSON; progress goes to stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shared.config import Settings, get_settings
from shared.errors import JobError
from shared.tenants import DEFAULT_TENANT, Tenant

if TYPE_CHECKING:
    from shared.jobs import JobDocument
    from shared.producer import Producer


def _emit(doc: JobDocument) -> None:
    sys.stdout.write(doc.model_dump_json() + "\n")
    sys.stdout.flush()


def _producer(settings: Settings) -> Producer:
    # Imported here: the engine commands must not pay for Celery and boto3.
    from shared.producer import Producer

    return Producer(settings)


def cmd_worker(args: argparse.Namespace) -> int:
    from shared.cli.celery_cmds import run_celery, stop_cleanly_on_sigterm

    stop_cleanly_on_sigterm()
    settings = get_settings()
    from shared import preflight

    preflight.require_broker(settings, "worker")
    from shared.jobs.registry import QUEUES, WEBHOOK_QUEUE
    from workers import startup
    from workers.app import app

    pool = args.pool or settings.worker_pool
    if pool == "threads" and set((args.queues or ",".join(QUEUES)).split(",")) != {WEBHOOK_QUEUE}:
        # Jobs hold the process's models and time limits per process: never in threads.
        raise JobError(f"--pool threads serves the webhook queue only: add --queues {WEBHOOK_QUEUE}")
    concurrency = 1 if pool == "solo" else args.concurrency or settings.worker_processes()
    # Here, before Celery takes stderr over: a refusal is one line and a status, never 0.
    startup.check(settings.model_copy(update={"worker_concurrency": concurrency}))
    startup.check_broker(app)
    argv = [
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--queues={args.queues or ','.join(QUEUES)}",
        f"--loglevel={args.loglevel}",
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    return run_celery(argv)


def cmd_submit(args: argparse.Namespace) -> int:
    producer = _producer(get_settings())
    try:
        _emit(producer.submit(args.kind, {name: getattr(args, name) for name in args.inputs}, args.job_id, args.tenant))
    finally:
        producer.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    producer = _producer(get_settings())
    try:
        doc = producer.get_job(args.job_id, args.tenant)
    finally:
        producer.close()
    if doc is None:
        raise JobError(f"no job {args.job_id!r} (never submitted, or expired)")
    _emit(doc)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    producer = _producer(get_settings())
    try:
        _emit(producer.wait_for(args.job_id, timeout_s=args.timeout, tenant=args.tenant))
    except TimeoutError as exc:
        print(f"kycface: {exc}", file=sys.stderr)
        return 1
    finally:
        producer.close()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from shared import preflight
    from shared.exits import service_status
    from shared.logs import uvicorn_log_config

    settings = get_settings()
    # Before uvicorn imports the app: a refusal is one line, not an import traceback. With no
    # broker the API starts and answers 503; with one, it must seal as the workers do.
    if settings.broker_url:
        preflight.require_sealing_key(settings, "api")
    try:
        # By import string, so the one app is the module's, built from the environment's settings.
        uvicorn.run("api_stub.app:app", host=args.host, port=args.port, log_level=args.loglevel.lower(),
                    log_config=uvicorn_log_config(settings) or LOGGING_CONFIG)  # fmt: skip
    except SystemExit as exc:  # uvicorn could not start (its reason is logged): never status 0 or 3
        return service_status(exc.code)
    return 0


def cmd_backlog(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared import preflight
    from shared.backlog.manifest import iter_manifest
    from shared.backlog.output import SUMMARY_FILE
    from shared.backlog.run import run_backlog

    settings = get_settings()
    # Before the first row: a backlog that cannot run says so at once, with a status.
    if settings.broker_url:
        preflight.require_redis(settings.broker_url, "backlog", "the broker")
    else:
        preflight.require_models(settings, "backlog")
    try:
        with tqdm(unit="job", file=sys.stderr, disable=args.quiet) as bar:
            report = run_backlog(
                iter_manifest(args.manifest, settings),
                args.out,
                settings,
                manifest=args.manifest,
                on_result=lambda _doc: bar.update(),
                processes=args.processes,
                window=args.window,
                timeout_s=args.timeout,
            )
    except (TimeoutError, KeyboardInterrupt) as exc:
        # The summary holds every row answered so far; a re-run continues after the last one.
        why = str(exc) or "interrupted"
        print(f"kycface: {why}; partial summary in {args.out / SUMMARY_FILE}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.statuses.items()))
    print(
        f"{report.rows} rows, {report.jobs} jobs ({report.mode}; {report.reused} from a previous run, "
        f"{report.resumed} rows resumed): {counts or 'nothing to do'}\n"
        f"summary: {report.summary}"
    )
    return 0


def cmd_sample_manifest(args: argparse.Namespace) -> int:
    from shared.backlog.sample import write_sample_manifest

    faces_dir = args.faces_dir or get_settings().sample_faces_dir
    if faces_dir is None:
        raise JobError("no sample photos found: pass --faces-dir or set KYC_SAMPLE_FACES_DIR")
    rows = write_sample_manifest(faces_dir, args.out)
    print(f"{rows} pairs from {faces_dir} written to {args.out}")
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return value


def tenant_type(text: str) -> Tenant:
    """``--tenant``'s argparse type: a usage error, not a traceback, for a bad name."""
    try:
        return Tenant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_tenant_option(parser: argparse.ArgumentParser, what: str = "job") -> None:
    parser.add_argument("--tenant", type=tenant_type, default=DEFAULT_TENANT,
                        help=f"whose {what} (default: {DEFAULT_TENANT}, the single-tenant deployment)")  # fmt: skip


def _register_submit(sub: argparse._SubParsersAction) -> None:
    from shared.jobs.inputs import InputType
    from shared.jobs.registry import REGISTRY

    submit = sub.add_parser("submit", help="queue one job; prints its job document")
    kinds = submit.add_subparsers(dest="kind", required=True, metavar="KIND")
    for spec in REGISTRY:
        parser = kinds.add_parser(spec.name, help=spec.help)
        for name, info in spec.inputs.model_fields.items():
            metavar = name.upper() + ("_REF" if spec.fields()[name] is InputType.REF else "")
            if info.is_required():
                parser.add_argument(name, metavar=metavar)
            else:
                parser.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=metavar,
                                    default=str(info.default), help=f"default: {info.default}")  # fmt: skip
        parser.add_argument("--job-id", help="idempotency key: resubmitting it returns the existing job")
        add_tenant_option(parser)
        parser.set_defaults(func=cmd_submit, inputs=list(spec.fields()))


def register(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser("worker", help="run a Celery worker with the project's settings")
    worker.add_argument("-c", "--concurrency", type=int, help="processes (default: KYC_WORKER_CONCURRENCY or cores)")
    worker.add_argument(
        "--pool",
        choices=["prefork", "solo", "threads"],
        help="prefork (default, KYC_WORKER_POOL) or solo: one process, run one per core with KYC_INTRA_OP_THREADS; "
        "threads: for the webhook queue only (kyc.webhooks), whose tasks wait on the network",
    )
    worker.add_argument("-Q", "--queues", help="comma-separated queues (default: all)")
    worker.add_argument("-n", "--hostname", help="worker node name")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)

    _register_submit(sub)

    status = sub.add_parser("status", help="print a job's document")
    status.add_argument("job_id", metavar="JOB_ID")
    add_tenant_option(status)
    status.set_defaults(func=cmd_status)

    wait = sub.add_parser("wait", help="wait until a job finishes; print its document")
    wait.add_argument("job_id", metavar="JOB_ID")
    add_tenant_option(wait)
    wait.add_argument("--timeout", type=_positive, default=60.0, help="seconds (default: 60)")
    wait.set_defaults(func=cmd_wait)

    api = sub.add_parser("api", help="serve the HTTP stub (uvicorn)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--loglevel", default="INFO")
    api.set_defaults(func=cmd_api)

    backlog = sub.add_parser(
        "backlog",
        help="verify every selfie,document row of a CSV manifest",
        description="Runs on the Celery workers when KYC_BROKER_URL is set, else in a local process pool. "
        "Relative paths are read relative to the manifest. An S3 prefix lists one row per case folder "
        "holding selfie.* and document.*. Re-running into the same --out directory resumes: rows "
        "and jobs already answered there are not run again.",
    )
    backlog.add_argument("manifest", metavar="MANIFEST", help="a CSV file, s3://bucket/key.csv, or s3://bucket/prefix/")
    backlog.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    backlog.add_argument("--processes", type=_positive_int, help="embedded pool size (default: cores)")
    backlog.add_argument(
        "--window", type=_positive_int, help="rows in flight at most (default: KYC_BACKLOG_WINDOW, 1000)"
    )
    backlog.add_argument("--timeout", type=_positive, help="give up waiting after this many seconds")
    backlog.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    backlog.set_defaults(func=cmd_backlog)

    sample = sub.add_parser("sample-manifest", help="write a sample backlog manifest from labelled photos")
    sample.add_argument("--out", type=Path, required=True, metavar="FILE")
    sample.add_argument("--faces-dir", type=Path, help="photos with labels.csv (default: KYC_SAMPLE_FACES_DIR)")
    sample.set_defaults(func=cmd_sample_manifest)

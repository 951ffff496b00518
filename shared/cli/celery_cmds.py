"""Celery run inside ``kycface``: ``beat``, and the runner ``kycface worker`` shares.

Celery's own command (``app.worker_main``) drops the worker's exit status: a worker that could
not start its pool ("Could not start worker processes") or was refused by a start-up check
ended ``kycface worker`` with status 0. Here the status is kept and made one of
:mod:`shared.exits`: a supervisor restarting ``on-failure`` must see every unclean stop.
"""

from __future__ import annotations

import argparse
import signal
from types import FrameType

from shared import preflight
from shared.config import get_settings
from shared.exits import service_status

CELERY_APP = "workers.app:app"


def run_celery(argv: list[str]) -> int:
    """Run ``celery -A workers.app:app <argv>`` in this process; its exit status, mapped by
    :func:`shared.exits.service_status`."""
    from celery.bin.celery import celery

    # Not standalone: click returns the status a command exits with instead of calling sys.exit.
    return service_status(celery.main(args=["-A", CELERY_APP, *argv], standalone_mode=False))


def stop_cleanly_on_sigterm() -> None:
    """Until Celery installs its warm shutdown (after it has made its pool, and a solo pool loads
    its models then, for seconds), SIGTERM would kill the worker by its default action: status
    143 to a supervisor. Nothing has been taken from the queue yet, so stopping at once, with
    status 0, is the warm shutdown of that moment. Celery's own handler replaces this one."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


def cmd_beat(args: argparse.Namespace) -> int:
    settings = get_settings()
    preflight.require_broker(settings, "beat")
    from workers import startup
    from workers.app import app

    startup.check_broker(app, "beat")
    argv = ["beat", f"--loglevel={args.loglevel}"]
    if args.schedule:
        argv.append(f"--schedule={args.schedule}")
    return run_celery(argv)


def register(sub: argparse._SubParsersAction) -> None:
    beat = sub.add_parser("beat", help="run celery beat: the periodic sweeper and gallery upkeep (one per deployment)")
    beat.add_argument("--schedule", metavar="FILE", help="beat's schedule file (default: celerybeat-schedule here)")
    beat.add_argument("--loglevel", default="INFO")
    beat.set_defaults(func=cmd_beat)

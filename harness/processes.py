"""Stopping the process groups the harness starts (``start_new_session=True``)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the group led by ``proc``, SIGKILL it after ``grace_s``.

    The whole group, because a Celery worker's pool children must not outlive their parent; SIGTERM
    first, because that is Celery's warm shutdown (it finishes or requeues its jobs).
    """
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

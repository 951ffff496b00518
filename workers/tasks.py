"""Thin tasks: one per registered job kind, and the sweeper. The work is in ``shared.jobs.runner``.

Each job task hands its job id to :func:`shared.jobs.runner.execute` (claim, run, store) and
turns the outcome's retry request into a Celery retry; the policy is ``workers.policy.KYCTask``.
"""

from __future__ import annotations

from typing import Any

from shared.jobs.registry import REGISTRY
from shared.jobs.runner import execute, time_out
from workers import process
from workers.app import SWEEP_TASK, app, lock_ttl_s
from workers.policy import KYCTask


class JobTask(KYCTask):
    """The task of a job kind: its attempts are counted by the job's claim in Redis."""

    attempts_in_job_store = True

    def on_hard_time_limit(self, args: Any, limit_s: float) -> None:
        time_out(str(args[0]), process.resources(), limit_s)


def run(task: JobTask, job_id: str) -> str:
    """Run one job; returns its status (``missing`` for an unknown job)."""
    resources = process.resources()
    outcome = execute(job_id, resources, lock_ttl_s(resources.settings))
    if outcome.retry:
        countdown = outcome.retry_in_s if outcome.retry_in_s is not None else task.backoff_s(outcome.attempt)
        raise task.retry_later(countdown)
    return outcome.status


def _register(task_name: str) -> Any:
    @app.task(name=task_name, base=JobTask, bind=True)
    def job(self: JobTask, job_id: str) -> str:
        return run(self, job_id)

    return job


JOB_TASKS = {spec.name: _register(spec.task) for spec in REGISTRY}


@app.task(name=SWEEP_TASK, ignore_result=True)
def requeue_stale() -> int:
    """Re-send jobs whose message never reached a worker (see :meth:`shared.producer.Producer.requeue_stale`)."""
    resources = process.resources()
    return len(resources.producer.requeue_stale(resources.settings.sweep_stale_s))

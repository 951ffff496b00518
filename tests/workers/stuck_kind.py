"""Test only: a job kind that the soft time limit cannot stop, and one that it can, for a worker
started with ``-I tests.workers.stuck_kind``.

It stands for a C decoder holding the process: the soft limit is a signal (Celery's SIGUSR1 in a
prefork child, SIGALRM in a solo worker) that Python only acts on between bytecodes, so a long C
call runs on to the hard limit. The handler blocks both signals and sleeps, which does the same
without burning a core for it.
"""

from __future__ import annotations

import signal
import time

from shared.jobs.context import JobContext
from shared.jobs.registry import HEAVY_QUEUE, JobInputs, job_kind
from shared.schemas import MatchResult
from workers.tasks import JobTask, app, run

KIND = "test_only_stuck"
STUCK_S = 120.0


class StuckInputs(JobInputs):
    pass


@job_kind(KIND, queue=HEAVY_QUEUE, help="test only: runs past the hard time limit")
def stuck(inputs: StuckInputs, job: JobContext) -> MatchResult:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGALRM})
    time.sleep(STUCK_S)
    raise AssertionError("the hard time limit should have killed this process")


@app.task(name=f"kyc.jobs.{KIND}", base=JobTask, bind=True)
def stuck_task(self: JobTask, job_id: str) -> str:
    return run(self, job_id)


SLOW = "test_only_slow"


@job_kind(SLOW, queue=HEAVY_QUEUE, help="test only: sleeps past the soft time limit, interruptibly")
def slow(inputs: StuckInputs, job: JobContext) -> MatchResult:
    time.sleep(STUCK_S)
    raise AssertionError("the soft time limit should have stopped this job")


@app.task(name=f"kyc.jobs.{SLOW}", base=JobTask, bind=True)
def slow_task(self: JobTask, job_id: str) -> str:
    return run(self, job_id)

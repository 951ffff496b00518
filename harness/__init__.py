"""Private services on loopback for the tests and the benchmarks: one copy of the harness.

Free ports, a private ``redis-server`` (AOF optional, hard kill and restart), a Sentinel-managed
set of them (primary, replica, three Sentinels; failover on a kill), moto's standalone
S3 server, and ``celery -A workers worker`` subprocesses in their own process group.

Why a top-level package of its own: ``bench/`` must not import ``tests/`` (that would drag in
pytest, the fixtures and the skip-locally/fail-in-CI policy), and the product packages must not
carry test tooling. ``harness`` is importable from a checkout (``pytest`` and ``python -m bench``
put the checkout on ``sys.path``) and is not in the wheel: ``[tool.setuptools.packages.find]``
includes only ``shared``, ``workers`` and ``api_stub``. Policy stays with the callers: the tests
decide when a missing ``redis-server`` skips or fails, the benchmarks what they measure.
"""

from harness.net import free_port, wait_port
from harness.processes import stop_process_group
from harness.redis_server import RedisServer
from harness.s3 import AWS_TEST_CREDENTIALS, MotoS3, S3Endpoint
from harness.sentinel import SentinelSet
from harness.worker import ROOT, TEST_FEATURES_KEY, CeleryWorker, worker_env

__all__ = [
    "AWS_TEST_CREDENTIALS",
    "ROOT",
    "TEST_FEATURES_KEY",
    "CeleryWorker",
    "MotoS3",
    "RedisServer",
    "S3Endpoint",
    "SentinelSet",
    "free_port",
    "stop_process_group",
    "wait_port",
    "worker_env",
]

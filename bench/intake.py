"""The intake at volume: requests/s into jobs, and Redis memory at the start and the end.

Usage::

    python bench/intake.py [--requests 100000] [--chunk 10000] [--batch 500] [--results bench/RESULTS.md]

Setup, private to this run: a redis-server on a free port (harness/), this process as both the
producer of the requests (pipelined ``XADD``s of flat ``faces`` requests, unique per request)
and the events consumer (``shared.events.consumer.Consumer`` on the real producer: every
request becomes a stored job and a Celery message; no worker runs, so the jobs stay queued).

The requests arrive in chunks of ``--chunk``; each chunk is consumed before the next arrives.
After a short warm-up run, not reported, two runs on a flushed Redis, back to back (``--rounds`` times, alternating, so neither is always
the one under the heavier neighbour):

- **ack only (baseline)**: the consumer without the trimming: one ``XACK`` per read, the handled
  entries stay on the stream;
- **ack + XDEL**: today's consumer, which deletes a read's entries in the same ``MULTI`` as their
  ``XACK``.

Reported per run: intake throughput (requests made into jobs per second, consuming only), Redis
``used_memory`` at the start and the end, ``XLEN`` and ``MEMORY USAGE`` of the intake stream at
the end, and Redis memory without the stream (the jobs: documents, Celery messages, metas; they
stay until workers take them and ``KYC_JOB_TTL_S`` ends, whatever the intake does).
"""

from __future__ import annotations

import argparse
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.results import command_line, machine, write_section  # noqa: E402
from harness import RedisServer  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.events.consumer import Consumer, Route, default_routes  # noqa: E402
from shared.events.model import Outcome  # noqa: E402
from shared.events.sources import Entry, StreamSource  # noqa: E402
from shared.events.wiring import producer_submit, validator  # noqa: E402
from shared.producer import Producer  # noqa: E402


class AckOnlySourceBaseline(StreamSource):
    """The intake stream as it was read before it was trimmed: acknowledged (a read's settled
    entries in one XACK, as today), never deleted."""

    def ack(self, entry: Entry) -> None:
        self.ack_many([entry])

    def ack_many(self, entries: Sequence[Entry]) -> None:
        self.client.xack(self.name, self.group, *[entry.entry_id for entry in entries])


def used_mb(client: redis.Redis) -> float:
    return int(client.info("memory")["used_memory"]) / 1e6


def run(url: str, args: argparse.Namespace, trimmed: bool) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    client.flushall()
    settings = Settings(broker_url=url, s3_bucket="kyc-images", events_batch=args.batch, events_block_ms=1)
    producer = Producer(settings)
    routes = default_routes(client, settings, validator(settings, producer.images.validate), producer_submit(producer))
    if not trimmed:
        intake = routes[0]
        source = AckOnlySourceBaseline(client, settings.events_intake_stream, settings.events_group, "bench")
        routes[0] = Route(source, intake.handler)
    consumer = Consumer(client, settings, routes)
    start_mb = used_mb(client)
    consuming_s, made, longest = 0.0, 0, 0
    for first in range(0, args.requests, args.chunk):
        pipe = client.pipeline(transaction=False)
        for n in range(first, min(first + args.chunk, args.requests)):
            pipe.xadd(settings.events_intake_stream, {"kind": "faces", "image": f"s3://kyc-images/in/{n}.jpg"})
        pipe.execute()
        longest = max(longest, client.xlen(settings.events_intake_stream))
        target = min(first + args.chunk, args.requests)
        started = time.perf_counter()
        while made < target:
            made += consumer.run_once()[Outcome.CREATED]
        consuming_s += time.perf_counter() - started
    stream_bytes = client.memory_usage(settings.events_intake_stream, samples=0) or 0
    report = {
        "variant": "ack + XDEL" if trimmed else "ack only (baseline)",
        "trimmed": trimmed,
        "requests": made,
        "rate": made / consuming_s,
        "start_mb": start_mb,
        "end_mb": used_mb(client),
        "xlen": client.xlen(settings.events_intake_stream),
        "longest": longest,
        "stream_mb": stream_bytes / 1e6,
    }
    producer.close()
    client.close()
    return report


def render(rows: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    baselines = [r["rate"] for r in rows if not r["trimmed"]]
    base_rate = sum(baselines) / len(baselines)
    lines = [
        f"`{command}` on {machine()}, {platform.node()}; load average "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} at the end; {args.requests:,} flat `faces` "
        f"requests on `kyc:intake`, in chunks of {args.chunk:,}, each consumed (batches of {args.batch}) "
        "before the next arrives; no worker (the jobs stay queued); x baseline against the mean of the "
        "baseline runs. The machine was shared with other work.",
        "",
        "| consumer | requests/s into jobs | x baseline | Redis used_memory start → end | XLEN kyc:intake at end "
        "| intake stream at end | Redis without the stream, per job |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        per_job = (r["end_mb"] - r["start_mb"] - r["stream_mb"]) * 1e6 / max(r["requests"], 1)
        lines.append(
            f"| {r['variant']} | {r['rate']:.0f} | {r['rate'] / base_rate:.2f} | "
            f"{r['start_mb']:.1f} → {r['end_mb']:.1f} MB | {r['xlen']:,} | {r['stream_mb']:.2f} MB | {per_job:.0f} B |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="kyc-intake-") as tmp, RedisServer(Path(tmp) / "redis") as server:
        # A short run first, not reported: the first one in a process pays connections and script loads.
        run(server.url, argparse.Namespace(**{**vars(args), "requests": min(2_000, args.requests)}), trimmed=True)
        rows = [
            run(server.url, args, trimmed=trimmed)
            for n in range(args.rounds)
            for trimmed in ((False, True) if n % 2 == 0 else (True, False))
        ]
    text = render(rows, args, command_line("bench/intake.py"))
    print(text)
    if args.results:
        write_section(args.results, "Intake at volume (issue 30)", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

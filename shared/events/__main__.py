"""``python -m shared.events``: the events service (see :mod:`shared.events.service`); the same as
``kycface events``, through the same start-up checks and exit statuses (docs/OPERATIONS.md)."""

from __future__ import annotations

import argparse
import logging

from shared.cli.main import main as kycface


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.events", description=__doc__)
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many reads of every source")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return kycface(["events"] + ([] if args.max_batches is None else ["--max-batches", str(args.max_batches)]))


if __name__ == "__main__":
    raise SystemExit(main())

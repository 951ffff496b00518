"""``python -m shared.events``: the events service (see :mod:`shared.events.service`); the same as
``kycface events``."""

from __future__ import annotations

import argparse
import logging

from shared.config import get_settings
from shared.events.service import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.events", description=__doc__)
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many reads of every source")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(get_settings(), args.max_batches)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

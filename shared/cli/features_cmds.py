"""``kycface features reseal --tenant T``: features strings sealed for a tenant, for the migration
to tenant-bound features (docs/OPERATIONS.md, "Tenant-bound features").

Reads one features string a line on stdin (sealed by this deployment, for any tenant or before
tenants had keys) and writes each sealed for ``--tenant``, in order, on stdout; a line that is
not such a string is reported on stderr by its line number (never its text) and written empty,
so the output lines up with the input. Needs ``KYC_FEATURES_KEY`` (and every older key the
strings were sealed with in ``KYC_FEATURES_KEYS_ACCEPTED``).
"""

from __future__ import annotations

import argparse
import sys

from shared import features
from shared.cli.pipeline_cmds import add_tenant_option
from shared.errors import FeaturesError, SettingsError


def cmd_reseal(args: argparse.Namespace) -> int:
    ring = features.key_ring()
    if ring.ephemeral:
        raise SettingsError("kycface features reseal: KYC_FEATURES_KEY is not set")
    refused = 0
    for number, line in enumerate(sys.stdin, start=1):
        text = line.strip()
        try:
            sealed = features.seal_for(text, args.tenant, ring) if text else ""
        except FeaturesError as exc:
            print(f"line {number}: {exc.message}", file=sys.stderr)
            refused, sealed = refused + 1, ""
        sys.stdout.write(sealed + "\n")
    sys.stdout.flush()
    return 1 if refused else 0


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("features", help="features strings: reseal them for a tenant")
    commands = group.add_subparsers(dest="features_command", required=True, metavar="ACTION")
    reseal = commands.add_parser("reseal", help="stdin's features strings, one a line, sealed for --tenant")
    add_tenant_option(reseal, "features")
    reseal.set_defaults(func=cmd_reseal)

"""``kycface api-key new``: mint an API key and print the ``KYC_API_KEYS`` entry that admits it.

The key is printed once and never stored; the entry holds only its SHA-256, tenant and scopes.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys

from shared.cli.pipeline_cmds import add_tenant_option
from shared.config import API_KEY_ID_PATTERN, ApiKey
from shared.tenants import Scope, api_key_hash, new_api_key


def cmd_new(args: argparse.Namespace) -> int:
    key = new_api_key()
    key_id = args.key_id or "key-" + secrets.token_hex(4)
    entry = ApiKey(sha256=api_key_hash(key), tenant=args.tenant, scopes=frozenset(args.scopes))
    config = {"sha256": entry.sha256, "tenant": entry.tenant, "scopes": sorted(s.value for s in entry.scopes)}
    sys.stdout.write(f"key: {key}\n")
    sys.stdout.write(f"KYC_API_KEYS entry: {json.dumps({key_id: config})}\n")
    print("Give the key to its holder now: it is not stored and cannot be shown again.", file=sys.stderr)
    return 0


def _scopes(text: str) -> list[Scope]:
    try:
        return [Scope(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        known = ", ".join(s.value for s in Scope)
        raise argparse.ArgumentTypeError(f"scopes are a comma-separated list of: {known}") from None


def _key_id(text: str) -> str:
    if not re.fullmatch(API_KEY_ID_PATTERN, text):
        raise argparse.ArgumentTypeError("key id must be 1-64 letters, digits, '.', '_' or '-'")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("api-key", help="mint API keys (printed once; configured as hashes)")
    commands = group.add_subparsers(dest="api_key_command", required=True, metavar="ACTION")
    new = commands.add_parser("new", help="mint a key; print it and its KYC_API_KEYS entry")
    add_tenant_option(new, "key")
    new.add_argument("--scopes", type=_scopes, required=True,
                     help="comma-separated: " + ", ".join(s.value for s in Scope))  # fmt: skip
    new.add_argument("--key-id", type=_key_id, default=None, help="the entry's name (default: random)")
    new.set_defaults(func=cmd_new)

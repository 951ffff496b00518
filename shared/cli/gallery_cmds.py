"""``kycface gallery enroll|search|delete|count|rescreen|dedupe``: a face gallery from the command line.

The gallery is the one the settings select (Redis with ``KYC_REDIS_URL``, else the local file
store), so these commands see what the workers enrol. A probe is an image file (its one usable
face) or a features string. One JSON document per command on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.cli.pipeline_cmds import add_tenant_option
from shared.config import get_settings
from shared.gallery.audit import audit_near_misses
from shared.schemas import FindManyResult, to_dict
from shared.tenants import scoped

if TYPE_CHECKING:
    from shared.gallery import KYCDeepFaceDB


def _emit(doc: Any) -> None:
    payload = doc if isinstance(doc, dict) else to_dict(doc)
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _db(args: argparse.Namespace) -> KYCDeepFaceDB:
    from shared.gallery import KYCDeepFaceDB

    return KYCDeepFaceDB(scoped(args.tenant, args.gallery), settings=get_settings())


def _probe(arg: str) -> tuple[str | None, Any]:
    """(features, None) from an image file's single usable face or a features string, else (None, error)."""
    if not Path(arg).is_file():
        return arg, None  # no engine to load for a features string
    from shared.cli.engine_cmds import features_of
    from shared.engine import KYCDeepFace

    return features_of(KYCDeepFace(settings=get_settings()), arg)


def cmd_enroll(args: argparse.Namespace) -> int:
    features, error = _probe(args.probe)
    if error is not None:
        _emit(error)
        return 0
    with _db(args) as db:
        _emit(db.set(args.face_id, features))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    features, error = _probe(args.probe)
    if error is not None:
        _emit(error)
        return 0
    with _db(args) as db:
        if args.near_misses:
            found = db.find_faces(features, top_k=args.top_k or 10, near_misses=True)
            listed = len(found.candidates) if isinstance(found, FindManyResult) else 0
            audit_near_misses("cli", args.tenant, args.gallery, listed)
            _emit(found)
        else:
            _emit(db.find_faces(features, top_k=args.top_k) if args.top_k else db.find_face(features))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _db(args) as db:
        _emit(db.delete(args.face_id))
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    with _db(args) as db:
        _emit({"code": "SUCCESS", "gallery": db.gallery, "count": db.count()})
    return 0


def cmd_screen(args: argparse.Namespace) -> int:
    from shared.gallery import KYCDeepFaceDB
    from shared.gallery.screening import run_in_process
    from shared.storage import store_for

    settings = get_settings()
    against = scoped(args.tenant, args.against if args.gallery_command == "rescreen" else args.gallery)
    source_name = scoped(args.tenant, args.gallery)
    with KYCDeepFaceDB(source_name, settings=settings) as source, KYCDeepFaceDB(against, settings=settings) as target:
        report, refs = run_in_process(args.gallery_command, source, target, store_for(settings), settings)
    _emit({"code": "SUCCESS", "run_id": report.run_id, "faces_screened": report.faces_screened,
           "hits": len(report.hits), "report": refs})  # fmt: skip
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    gallery = sub.add_parser("gallery", help="enrol, search, delete and count faces of a gallery (1:N)")
    commands = gallery.add_subparsers(dest="gallery_command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--gallery", default="default", help="gallery name (default: default)")
        add_tenant_option(parser, "gallery")
        return parser

    enroll = add("enroll", "enrol (or replace) a face under FACE_ID")
    enroll.add_argument("face_id", metavar="FACE_ID")
    enroll.add_argument("probe", metavar="IMAGE_OR_FEATURES")
    enroll.set_defaults(func=cmd_enroll)

    search = add("search", "best match at the gallery's 1:N operating point, or the top-k")
    search.add_argument("probe", metavar="IMAGE_OR_FEATURES")
    search.add_argument("--top-k", type=int, default=0, help="list the matches among the K best instead of find_face")
    search.add_argument("--near-misses", action="store_true",
                        help="list the K best ranked, matching or not (an investigator's search; audited)")  # fmt: skip
    search.set_defaults(func=cmd_search)

    delete = add("delete", "erase FACE_ID's template")
    delete.add_argument("face_id", metavar="FACE_ID")
    delete.set_defaults(func=cmd_delete)

    count = add("count", "faces enrolled")
    count.set_defaults(func=cmd_count)

    # Screening runs here, chunk after chunk; on Celery beat they fan out over the workers.
    rescreen = add("rescreen", "every face of --gallery against AGAINST; writes a JSON and a CSV report")
    rescreen.add_argument("against", metavar="AGAINST", help="gallery to screen against (e.g. watchlist)")
    rescreen.set_defaults(func=cmd_screen)

    dedupe = add("dedupe", "pairs of faces within --gallery above its 1:N threshold; writes a report")
    dedupe.set_defaults(func=cmd_screen)

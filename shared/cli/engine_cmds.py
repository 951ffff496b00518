"""``kycface faces`` and ``kycface match``: the engine on local files, JSON lines out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shared.errors import ImageReason, InvalidImageError, KYCFaceError
from shared.schemas import ErrorResult, InvalidImageResult, QualityLevel, to_dict


def _emit(doc: Any) -> None:
    sys.stdout.write(json.dumps(to_dict(doc), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _engine(args: argparse.Namespace) -> Any:
    from shared.engine import KYCDeepFace

    return KYCDeepFace(verify_confidence=args.verify_confidence)


def cmd_faces(args: argparse.Namespace) -> int:
    engine = _engine(args)
    for path in args.images:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            # An unreadable file is an answer about that input, like any bad image.
            _emit(InvalidImageResult(reason=ImageReason.READ_ERROR, message=f"cannot read {path}: {exc.strerror}"))
            continue
        _emit(engine.get_faces(data, args.quality, liveness=args.liveness))
    return 0


def features_of(engine: Any, arg: str) -> tuple[str | None, Any]:
    """An image path gives its single usable face's features; anything else is a features string.

    Returns:
        (features, None), or (None, the result document that says why there are none).
    """
    path = Path(arg)
    if not path.is_file():
        return arg, None
    try:
        return engine.single_face(path.read_bytes()).template(), None
    except InvalidImageError as exc:
        return None, InvalidImageResult(reason=exc.reason, message=exc.message)
    except KYCFaceError as exc:
        return None, ErrorResult(message=f"{arg}: {exc.message}")


def cmd_match(args: argparse.Namespace) -> int:
    engine = _engine(args)
    a, err_a = features_of(engine, args.a)
    b, err_b = features_of(engine, args.b)
    if err_a is not None or err_b is not None:
        _emit(err_a if err_a is not None else err_b)
        return 0
    _emit(engine.match_faces(a, b))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    faces = sub.add_parser("faces", help="detect and embed every face; one JSON document per image")
    faces.add_argument("images", nargs="+", metavar="IMAGE")
    faces.add_argument(
        "--quality",
        choices=[level.value for level in QualityLevel],
        help="which faces are usable: none, low (default, KYC_QUALITY_DEFAULT), medium, high (verify selfie)",
    )
    faces.add_argument("--liveness", action="store_true", help="score each usable face's liveness")
    faces.set_defaults(func=cmd_faces, verify_confidence=0.76)

    match = sub.add_parser("match", help="1:1 match of two images or features strings")
    match.add_argument("a", metavar="A", help="image file or features string")
    match.add_argument("b", metavar="B", help="image file or features string")
    match.add_argument("--verify-confidence", type=float, default=0.76)
    match.set_defaults(func=cmd_match)

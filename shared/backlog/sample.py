"""A sample backlog from a folder of labelled photos: same-identity pairs, different-identity
pairs, and a few selfies a KYC check must refuse (several faces, no face)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from shared.errors import JobError

LABELS_FILE = "labels.csv"
# Identities in labels.csv that are not one person.
_NOT_A_PERSON = {"multi", "noface"}


def sample_pairs(faces_dir: Path) -> list[tuple[Path, Path]]:
    """``(selfie, document)`` pairs from ``faces_dir/labels.csv`` (columns file, identity,
    faces_expected), in a stable order.

    Each identity's first photo is paired with each of its other photos (same person), and with
    the next identity's first photo (different people). One multi-face and one face-less photo
    are used as selfies against the first portrait, to show the refusals.

    Raises:
        JobError: no labels file, or too few labelled people to pair.
    """
    labels = faces_dir / LABELS_FILE
    try:
        with labels.open(newline="") as fh:
            records = list(csv.DictReader(fh))
    except OSError as exc:
        raise JobError(f"cannot read {labels} ({exc.strerror or type(exc).__name__})") from None
    people: dict[str, list[Path]] = defaultdict(list)
    refusals: dict[str, Path] = {}
    for r in records:
        path = (faces_dir / r["file"]).resolve()
        if r["identity"] in _NOT_A_PERSON:
            refusals.setdefault(r["identity"], path)
        elif r["faces_expected"] == "1":
            people[r["identity"]].append(path)
    names = sorted(people)
    if len(names) < 2:
        raise JobError(f"{labels}: need at least two labelled identities to build pairs")
    pairs = [(people[n][0], other) for n in names for other in people[n][1:]]
    pairs += [(people[a][0], people[b][0]) for a, b in zip(names, names[1:] + names[:1], strict=True)]
    pairs += [(selfie, people[names[0]][0]) for _, selfie in sorted(refusals.items())]
    return pairs


def write_sample_manifest(faces_dir: Path, out: Path) -> int:
    """Write :func:`sample_pairs` as a backlog manifest (absolute paths); returns the row count."""
    pairs = sample_pairs(faces_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["selfie", "document"])
        writer.writerows([str(s), str(d)] for s, d in pairs)
    return len(pairs)

"""Image references: ``s3://bucket/key``, ``file:///abs/path`` or a plain local path.

Parsing is pure syntax (no I/O, no settings) so a producer can reject a bad reference before it
ever reaches a queue. Which buckets and directories may be read is the backends' business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from shared.errors import ReferenceRejectedError

MAX_REF_CHARS = 2048
# S3's own bucket naming rules (lowercase, digits, dots, hyphens; 3-63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Ref:
    """A parsed reference. ``key`` is the object key for S3, the path for local files."""

    scheme: Literal["s3", "file"]
    key: str
    bucket: str | None = None

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}"
        return self.key


def _check_key(key: str) -> None:
    if not key:
        raise ReferenceRejectedError("reference has an empty key")
    if key.startswith("/"):
        raise ReferenceRejectedError("reference has an absolute key")
    # S3 would store "a/../b" literally, but proxies and local mirrors normalise it: refuse.
    if any(part in ("..", ".") for part in key.split("/")):
        raise ReferenceRejectedError("reference has a '.' or '..' segment")


def parse_ref(ref: str) -> Ref:
    """Parse and validate the syntax of an image reference.

    Args:
        ref: ``s3://bucket/key``, ``file:///absolute/path`` or a plain filesystem path.

    Returns:
        The parsed reference.

    Raises:
        ReferenceRejectedError: empty, too long, control characters, an unknown scheme, an invalid
            bucket name, or an empty / absolute / dot-segment S3 key.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ReferenceRejectedError("empty image reference")
    if len(ref) > MAX_REF_CHARS:
        raise ReferenceRejectedError(f"image reference longer than {MAX_REF_CHARS} characters")
    if _CONTROL.search(ref):
        raise ReferenceRejectedError("image reference contains control characters")
    if ref.startswith("s3://"):
        bucket, _, key = ref[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket):
            raise ReferenceRejectedError("reference names an invalid bucket")
        _check_key(key)
        return Ref(scheme="s3", bucket=bucket, key=key)
    if ref.startswith("file://"):
        path = ref[len("file://") :]
        if not path.startswith("/"):
            raise ReferenceRejectedError("reference: file:// needs an absolute path")
        return Ref(scheme="file", key=path)
    if "://" in ref:
        raise ReferenceRejectedError("reference has an unsupported scheme")
    return Ref(scheme="file", key=ref)

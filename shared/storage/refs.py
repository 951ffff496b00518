"""Image references: ``s3://bucket/key``, ``file:///abs/path`` or a plain local path.

An S3 reference may pin the object's version: ``s3://bucket/key?versionId=<id>`` reads exactly
that version of a versioned bucket, ``s3://bucket/key?etag=<etag>`` reads the object only while
its ETag is still that one (``If-Match``); anything else is refused, never answered on other
bytes (docs/EVENTS.md, "Version-exact references"). A key that itself ends in ``?versionId=...``
or ``?etag=...`` cannot be named.

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
# The version suffix: S3 version ids and ETags are URL-safe tokens (base64-ish, hex, "-N").
_VERSION = re.compile(r"\?(?P<name>versionId|etag)=(?P<value>[A-Za-z0-9._+/=-]{1,1024})$")


@dataclass(frozen=True)
class Ref:
    """A parsed reference. ``key`` is the object key for S3, the path for local files."""

    scheme: Literal["s3", "file"]
    key: str
    bucket: str | None = None
    version_id: str | None = None  # S3 only: read exactly this version
    etag: str | None = None  # S3 only: read only while the object's ETag is this (no quotes)

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}{self.version_suffix}"
        return self.key

    @property
    def version_suffix(self) -> str:
        """``?versionId=...``, ``?etag=...`` or nothing: the pin as the grammar spells it."""
        if self.version_id:
            return f"?versionId={self.version_id}"
        if self.etag:
            return f"?etag={self.etag}"
        return ""

    def pinned(self, version_id: str | None, etag: str | None) -> Ref:
        """This reference pinned to a version: its id when the bucket keeps versions, else its ETag."""
        if version_id and version_id != "null":  # "null": the version of an unversioned write
            return Ref(self.scheme, self.key, self.bucket, version_id=version_id)
        return Ref(self.scheme, self.key, self.bucket, etag=(etag or "").strip('"') or None)


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
        ref: ``s3://bucket/key`` (optionally ``?versionId=<id>`` or ``?etag=<etag>``),
            ``file:///absolute/path`` or a plain filesystem path.

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
        version = _VERSION.search(key)
        if version is not None:
            key = key[: version.start()]
        _check_key(key)
        if version is None:
            return Ref(scheme="s3", bucket=bucket, key=key)
        if version["name"] == "versionId":
            return Ref(scheme="s3", bucket=bucket, key=key, version_id=version["value"])
        return Ref(scheme="s3", bucket=bucket, key=key, etag=version["value"])
    if ref.startswith("file://"):
        path = ref[len("file://") :]
        if not path.startswith("/"):
            raise ReferenceRejectedError("reference: file:// needs an absolute path")
        return Ref(scheme="file", key=path)
    if "://" in ref:
        raise ReferenceRejectedError("reference has an unsupported scheme")
    return Ref(scheme="file", key=ref)

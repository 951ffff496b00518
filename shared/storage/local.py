"""Local filesystem backend: the embedded default (no broker, no S3) and tests."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from shared.errors import ObjectNotFoundError, ObjectTooLargeError, ReferenceRejectedError, StorageError
from shared.storage.refs import Ref, parse_ref


class LocalStore:
    """Files on this machine, optionally confined to one directory.

    Args:
        max_bytes: files larger than this are refused before being read.
        root: when set, relative paths resolve under it and nothing outside it may be read or
            written (symlinks included, since the check is on the resolved path).
    """

    def __init__(self, max_bytes: int, root: Path | None = None) -> None:
        self.max_bytes = max_bytes
        # A string for path_of (os.path resolves a path in about half of pathlib's time, and every
        # job's reference is checked twice: when submitted, when fetched), ending in a separator
        # so that a sibling whose name starts with the root's is outside it.
        self._root = os.path.join(root.resolve(), "") if root is not None else None

    def path_of(self, ref: str | Ref) -> Path:
        """The filesystem path a reference names, after the confinement check."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        if parsed.scheme != "file":
            raise ReferenceRejectedError(f"{parsed} is not a local file reference")
        if self._root is None:
            return Path(parsed.key)
        resolved = os.path.realpath(os.path.join(self._root, parsed.key))
        if not os.path.join(resolved, "").startswith(self._root):
            raise ReferenceRejectedError(f"{parsed} is outside the local storage root")
        return Path(resolved)

    def get(self, ref: str | Ref) -> bytes:
        """Read a file (see :class:`shared.storage.base.ImageStore`)."""
        path = self.path_of(ref)
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                # A directory, a FIFO (reading would block forever), a device...
                raise ReferenceRejectedError(f"{ref}: not a regular file")
            size = info.st_size
            if size > self.max_bytes:
                raise ObjectTooLargeError(f"{ref}: {size} bytes exceeds the {self.max_bytes}-byte limit")
            with path.open("rb") as fh:
                # A buffer of the stat'd size (not of the cap: 25 MiB per read), one byte more to
                # see a file that grew since stat(); a grown one is read on to one byte past the cap.
                data = fh.read(size + 1)
                if len(data) > size:
                    data += fh.read(self.max_bytes + 1 - len(data))
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{ref}: no such file") from None
        except PermissionError:
            raise StorageError(f"{ref}: permission denied") from None
        except OSError as exc:
            raise StorageError(f"{ref}: cannot read ({exc.strerror or type(exc).__name__})") from None
        if len(data) > self.max_bytes:
            raise ObjectTooLargeError(f"{ref}: exceeds the {self.max_bytes}-byte limit")
        return data

    def put(self, ref: str, data: bytes) -> None:
        """Write a file atomically (temp file + rename), creating parent directories."""
        path = self.path_of(ref)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"{ref}: cannot write ({exc.strerror or type(exc).__name__})") from None

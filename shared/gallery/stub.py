"""An in-memory gallery store for unit tests: the store contract without Redis or files.

Not durable and not shared between processes; it exists so index and replica logic can be tested
(and benchmarked) without services. Its log trims like the real stores', so reload paths run too.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence

from shared.errors import GalleryError
from shared.gallery.store import Changes, Head, Op

_PAGE = 5000


class StubGalleryStore:
    """One gallery in a dict, with an op log of at most ``log_max_len`` entries."""

    def __init__(self, log_max_len: int = 100_000) -> None:
        self._faces: dict[str, str] = {}
        self._log: list[tuple[int, Op, str]] = []
        self._seq = 0
        self._trimmed = 0
        self._model: str | None = None
        self._epoch: str | None = None
        self._log_max_len = log_max_len
        self._lock = threading.Lock()

    def _append(self, op: Op, face_id: str) -> None:
        self._seq += 1
        self._log.append((self._seq, op, face_id))
        if len(self._log) > self._log_max_len:
            cut = len(self._log) - self._log_max_len
            self._trimmed = self._log[cut - 1][0]
            del self._log[:cut]

    def model_id(self) -> str | None:
        return self._model

    def put(self, face_id: str, model_id: str, features: str) -> None:
        with self._lock:
            if self._model is not None and self._model != model_id:
                raise GalleryError(
                    f"gallery holds templates of model {self._model!r}; refusing features of {model_id!r}"
                )
            if self._model is None:
                self._model, self._epoch = model_id, uuid.uuid4().hex
            self._faces[face_id] = features
            self._append(Op.SET, face_id)

    def remove(self, face_id: str) -> bool:
        with self._lock:
            if self._faces.pop(face_id, None) is None:
                return False
            self._append(Op.DELETE, face_id)
            return True

    def fetch(self, face_ids: Sequence[str]) -> dict[str, str]:
        return {f: self._faces[f] for f in face_ids if f in self._faces}

    def count(self) -> int:
        return len(self._faces)

    def face_ids(self) -> list[str]:
        return list(self._faces)

    def head(self) -> Head:
        return Head(epoch=self._epoch, cursor=str(self._seq))

    def changes(self, epoch: str | None, cursor: str) -> Changes | None:
        with self._lock:
            after = int(cursor)
            if epoch != self._epoch or after < self._trimmed:
                return None
            page = [(seq, op, f) for seq, op, f in self._log if seq > after][:_PAGE]
            return Changes(ops=[(op, f) for _, op, f in page], cursor=str(page[-1][0]) if page else cursor)

    def scan(self, batch: int = 5000) -> Iterator[list[tuple[str, str]]]:
        items = list(self._faces.items())
        for start in range(0, len(items), batch):
            yield items[start : start + batch]

    def drop(self) -> None:
        with self._lock:
            self._faces.clear()
            self._log.clear()
            self._model = self._epoch = None
            self._trimmed = self._seq

    def close(self) -> None:
        """Nothing to release."""

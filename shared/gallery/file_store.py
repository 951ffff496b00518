"""Gallery templates in a local SQLite file: the embedded mode, when no Redis is configured.

The same model as the Redis store (templates, an op log by face id, a meta table), in one
``<gallery>.sqlite3`` file per gallery under ``KYC_GALLERY_FILE_DIR``. SQLite gives what a
hand-rolled file would not: atomic writes that survive a crash, several processes sharing one
gallery (WAL mode), and erasure: ``secure_delete`` overwrites a deleted template's bytes, and
the WAL is checkpointed and truncated after every delete so no old page keeps a copy.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from shared.errors import GalleryError, StorageUnavailableError
from shared.gallery.store import Changes, Head, Op

DEFAULT_LOG_MAX_LEN = 100_000
_CHANGES_PAGE = 5000
_BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faces (face_id TEXT PRIMARY KEY, features TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, face_id TEXT NOT NULL);
"""


class FileGalleryStore:
    """One gallery in ``directory/<gallery>.sqlite3``.

    Args:
        directory: where gallery files live (created if missing).
        gallery: the gallery's name (already checked, so safe as a file name).
        log_max_len: ops kept in the change log.

    Raises:
        StorageUnavailableError: the file cannot be created or opened.
    """

    def __init__(self, directory: Path, gallery: str, log_max_len: int = DEFAULT_LOG_MAX_LEN) -> None:
        self.path = self.path_for(directory, gallery)
        self._log_max_len = log_max_len
        self._lock = threading.Lock()
        with self._errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened explicitly, writers with BEGIN IMMEDIATE.
            self._db = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.executescript(_SCHEMA)

    @staticmethod
    def path_for(directory: Path, gallery: str) -> Path:
        """The file of ``gallery`` under ``directory`` (it exists once the gallery was opened)."""
        return Path(directory) / f"{gallery}.sqlite3"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailableError(f"gallery file {self.path} unavailable ({exc})") from None

    @contextmanager
    def _transaction(self, mode: str = "") -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            self._db.execute(f"BEGIN {mode}")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _meta(self, db: sqlite3.Connection, key: str) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _log(self, db: sqlite3.Connection, op: Op, face_id: str) -> None:
        seq = db.execute("INSERT INTO log (op, face_id) VALUES (?, ?)", (op.value, face_id)).lastrowid or 0
        floor = seq - self._log_max_len
        if floor > 0 and db.execute("DELETE FROM log WHERE seq <= ?", (floor,)).rowcount:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('trimmed', ?)", (str(floor),))

    def model_id(self) -> str | None:
        with self._transaction() as db:
            return self._meta(db, "model_id")

    def put(self, face_id: str, model_id: str, features: str) -> None:
        with self._transaction("IMMEDIATE") as db:
            model = self._meta(db, "model_id")
            if model is not None and model != model_id:
                raise GalleryError(f"gallery holds templates of model {model!r}; refusing features of {model_id!r}")
            if model is None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('model_id', ?)", (model_id,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (uuid.uuid4().hex,))
            db.execute("INSERT OR REPLACE INTO faces VALUES (?, ?)", (face_id, features))
            self._log(db, Op.SET, face_id)

    def remove(self, face_id: str) -> bool:
        with self._transaction("IMMEDIATE") as db:
            removed = db.execute("DELETE FROM faces WHERE face_id = ?", (face_id,)).rowcount > 0
            if removed:
                self._log(db, Op.DELETE, face_id)
        if removed:
            self._truncate_wal()
        return removed

    def _truncate_wal(self) -> None:
        # Old page images in the WAL still hold the erased template until a checkpoint; a
        # reader in another process can make this one partial, and the next delete retries.
        with self._lock, self._errors():
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def fetch(self, face_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._transaction() as db:
            for face_id in face_ids:
                row = db.execute("SELECT features FROM faces WHERE face_id = ?", (face_id,)).fetchone()
                if row is not None:
                    found[face_id] = str(row[0])
        return found

    def count(self) -> int:
        with self._transaction() as db:
            return int(db.execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def face_ids(self) -> list[str]:
        with self._transaction() as db:
            return [str(row[0]) for row in db.execute("SELECT face_id FROM faces")]

    def head(self) -> Head:
        with self._transaction() as db:
            last = db.execute("SELECT MAX(seq) FROM log").fetchone()[0]
            return Head(epoch=self._meta(db, "epoch"), cursor=str(last or 0))

    def changes(self, epoch: str | None, cursor: str) -> Changes | None:
        with self._transaction() as db:
            if self._meta(db, "epoch") != epoch:
                return None
            trimmed = self._meta(db, "trimmed")
            if trimmed is not None and int(cursor) < int(trimmed):
                return None
            rows = db.execute(
                "SELECT seq, op, face_id FROM log WHERE seq > ? ORDER BY seq LIMIT ?", (int(cursor), _CHANGES_PAGE)
            ).fetchall()
        ops = [(Op(op), str(face_id)) for _, op, face_id in rows]
        return Changes(ops=ops, cursor=str(rows[-1][0]) if rows else cursor)

    def scan(self, batch: int = 5000) -> Iterator[list[tuple[str, str]]]:
        after = ""
        while True:
            with self._transaction() as db:
                page = db.execute(
                    "SELECT face_id, features FROM faces WHERE face_id > ? ORDER BY face_id LIMIT ?", (after, batch)
                ).fetchall()
            if not page:
                return
            yield [(str(f), str(v)) for f, v in page]
            after = str(page[-1][0])

    def drop(self) -> None:
        with self._transaction("IMMEDIATE") as db:
            db.execute("DELETE FROM faces")
            db.execute("DELETE FROM log")
            db.execute("DELETE FROM meta")
        self._truncate_wal()

    def close(self) -> None:
        with self._lock:
            self._db.close()

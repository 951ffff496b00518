"""Who holds a job's run lock: a token naming the execution's host and process.

The lock normally outlives a crashed holder until its TTL (past the hard time limit), which is
what guarantees no two executions overlap. When the holder ran on this very host, we can do
better: if its process is gone, the lock is stale now, and a redelivered job starts at once
instead of waiting minutes. Holders on other hosts are never second-guessed.
"""

from __future__ import annotations

import os
import socket
import uuid


def execution_token() -> str:
    """A token unique to one execution: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


def holder_is_dead(token: bytes | str) -> bool:
    """True only if ``token`` names a process on this host that no longer exists."""
    text = token.decode(errors="replace") if isinstance(token, bytes) else token
    host, _, rest = text.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: existence check only
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def process_is_running(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (killed, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")".
            return fh.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):  # no /proc (not Linux): existence is all we know
        return True

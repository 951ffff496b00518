"""Exit statuses of the commands and services, from ``sysexits.h``, and the refusal to start.

A supervisor (compose's ``restart: on-failure``, systemd's ``Restart=on-failure``, a Kubernetes
Job) reads status 0 as a clean stop and leaves the queue without a consumer: so a service that
cannot run must say why on one line and exit with one of these, never 0. docs/OPERATIONS.md
("Exit codes") is the table.
"""

from __future__ import annotations

from pydantic import ValidationError

from shared.errors import KYCFaceError, SettingsError, StorageUnavailableError

EX_OK = 0
# A one-shot command could not do what was asked (no such job, a bad manifest row, a timeout).
EX_FAILURE = 1
EX_USAGE = 2  # argparse's status for a bad command line
EX_UNAVAILABLE = 69  # a service it needs (the broker, Redis) does not answer: may pass, so retry
EX_SOFTWARE = 70  # an internal failure: a bug, or Celery's pool that could not start
EX_CONFIG = 78  # the settings cannot work (a missing key, model or broker, bad limits, a typo)


class StartRefused(Exception):
    """A service would not start. Not a :class:`KYCFaceError`: it is no job's result.

    Args:
        message: one line naming the reason and what to set.
        status: the exit status, :data:`EX_CONFIG` or :data:`EX_UNAVAILABLE`.
    """

    def __init__(self, message: str, status: int = EX_CONFIG) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @classmethod
    def of(cls, exc: KYCFaceError, who: str) -> StartRefused:
        """The refusal for an error met while checking a service (``who``) before it starts: an
        unreachable store may come back (69), anything else is the configuration's (78)."""
        status = EX_UNAVAILABLE if isinstance(exc, StorageUnavailableError) else EX_CONFIG
        prefix = "" if exc.message.startswith("kycdeepface ") else f"kycdeepface {who}: "
        return cls(one_line(prefix + exc.message), status)


def service_status(code: object) -> int:
    """The status for the exit code a framework (Celery, uvicorn) stopped with: 0 for a clean
    stop (a warm shutdown on SIGTERM); a start-up refusal's own status (the worker's checks run
    from a Celery signal, workers.startup); :data:`EX_SOFTWARE` for anything else. Celery exits 1
    on an unrecoverable error (a pool that could not start, a broker it may not retry) and on a
    cold shutdown; uvicorn 3 when it could not start (a port in use, an app that failed to load).
    """
    if code is None or code == EX_OK:
        return EX_OK
    if code in (EX_CONFIG, EX_UNAVAILABLE):
        return int(code)
    return EX_SOFTWARE


def settings_message(exc: ValidationError | SettingsError) -> str:
    """One line for settings that do not validate, naming each variable (never its value:
    a URL or a key may be secret)."""
    if isinstance(exc, SettingsError):
        return one_line(exc.message)
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        name = f"KYC_{str(error['loc'][0]).upper()}" if error["loc"] else "settings"
        problems.append(f"{name}: {error['msg']}")
    return one_line("invalid settings: " + "; ".join(problems))


def one_line(text: str) -> str:
    """``text`` with its line breaks folded, so a refusal is exactly one line on stderr."""
    return " ".join(text.split())

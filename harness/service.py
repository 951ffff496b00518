"""The one shape every harness service has: ``start()``, ``stop()``, and a ``with`` block."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """Started on entering a ``with`` block, stopped on leaving it, whatever happened inside."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

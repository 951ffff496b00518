"""onnxruntime sessions, created once per process and model and reused by every call."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import onnxruntime as ort

from shared.errors import ProviderUnavailableError

_lock = threading.Lock()
_sessions: dict[tuple[int, str, int, tuple[str, ...]], ort.InferenceSession] = {}


def check_providers(wanted: list[str]) -> list[str]:
    """``wanted`` if onnxruntime has every one of them.

    Raises:
        ProviderUnavailableError: naming the missing providers and the installed ones (CUDA needs
            the ``onnxruntime-gpu`` package in place of ``onnxruntime``).
    """
    installed = ort.get_available_providers()
    missing = [p for p in wanted if p not in installed]
    if missing:
        raise ProviderUnavailableError(
            f"onnxruntime execution provider(s) {', '.join(missing)} not installed; installed: {', '.join(installed)}"
        )
    return wanted


def build_session(
    model: bytes, threads: int, providers: tuple[str, ...] = ("CPUExecutionProvider",)
) -> ort.InferenceSession:
    """A new, uncached session for ``model`` (serialised ONNX) with the options every session uses."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn a core between calls; workers share cores between processes.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # fr_feature holds thousands of denormal weights (~7x slower without this). onnxruntime
    # applies the flag with the first session's thread pool, so every session sets it;
    # flushing denormals changes no other model's outputs measurably.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(model, options, providers=check_providers(list(providers)))


def cached_session(
    key: str, threads: int, providers: tuple[str, ...], build: Callable[[], ort.InferenceSession]
) -> ort.InferenceSession:
    """The session cached under ``key`` for this process, made by ``build`` on first use.

    The pid is part of the cache key: a session inherited across ``fork`` (Celery prefork) is not
    safe to use, so a child builds its own on first use.
    """
    cache_key = (os.getpid(), key, threads, providers)
    with _lock:
        session = _sessions.get(cache_key)
        if session is None:
            session = build()
            _sessions[cache_key] = session
        return session


def create_session(
    key: str, model: bytes, threads: int, providers: tuple[str, ...] = ("CPUExecutionProvider",)
) -> ort.InferenceSession:
    """A session for ``model`` (serialised ONNX) on ``providers``, cached under ``key`` for this process."""
    return cached_session(key, threads, providers, lambda: build_session(model, threads, providers))

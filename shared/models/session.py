"""onnxruntime sessions, created once per process and model and reused by every call."""

from __future__ import annotations

import os
import threading

import onnxruntime as ort

_lock = threading.Lock()
_sessions: dict[tuple[int, str, int], ort.InferenceSession] = {}


def create_session(key: str, model: bytes, threads: int) -> ort.InferenceSession:
    """A CPU session for ``model`` (serialised ONNX), cached under ``key`` for this process.

    The pid is part of the cache key: a session inherited across ``fork`` (Celery prefork) is not
    safe to use, so a child builds its own on first use.
    """
    cache_key = (os.getpid(), key, threads)
    with _lock:
        session = _sessions.get(cache_key)
        if session is None:
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
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            _sessions[cache_key] = session
        return session

"""Probe patterns: many searches from one holder whose probes are near-duplicates of each other.

A template rebuild or a hill-climb towards a victim searches with probe after probe around the
same face (issue 29: 250-800 searches). A process keeps, per holder, a ring of the last
``KYC_API_PROBE_RING`` probes as 64-bit sketches (the signs of 64 fixed random projections of the
vector, SimHash) and counts a probe whose sketch is within ``KYC_API_PROBE_NEAR_BITS`` bits of
one in the ring. The API observes the features probes of each key's searches (``key:<id>``); a
worker observes every probe it searches with, images included, per tenant (``tenant:<name>``),
since a job carries no key. Sketches stay in the process's memory; the log line and the metric
carry the holder and counts only, never a probe, a sketch or a score.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from functools import lru_cache

import numpy as np

from shared.config import Settings
from shared.features import Features

log = logging.getLogger(__name__)

SKETCH_BITS = 64
_SEED = 29  # fixed: a sketch is compared only with sketches made by the same planes


def sketch(vector: np.ndarray) -> int:
    """The 64-bit SimHash of ``vector``: bit i is the sign of its projection on plane i.

    Two unit vectors at angle θ differ in each bit with probability θ/π: cosine 0.95 gives ~6.4
    of 64 bits, two photos of one person (cosine ~0.6) ~19, strangers ~32.
    """
    bits = _planes(vector.size) @ vector.astype(np.float64) >= 0
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


@lru_cache(maxsize=4)
def _planes(dim: int) -> np.ndarray:
    return np.random.default_rng(_SEED).standard_normal((SKETCH_BITS, dim))


class ProbePatterns:
    """Per holder, the last ``ring`` probes' sketches, and how many near-duplicates were seen.

    Args:
        ring: sketches kept per key.
        near_bits: a probe within this many bits of one in the ring is a near-duplicate.
    """

    def __init__(self, ring: int, near_bits: int) -> None:
        self.ring = ring
        self.near_bits = near_bits
        self._rings: dict[str, deque[int]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, holder: str, probe: Features) -> bool:
        """Record one search probe of ``holder``; True when it near-duplicates a recent one."""
        mark = sketch(probe.vector)
        with self._lock:
            recent = self._rings.setdefault(holder, deque(maxlen=self.ring))
            near = any((mark ^ seen).bit_count() <= self.near_bits for seen in recent)
            recent.append(mark)
            if near:
                self._counts[holder] = self._counts.get(holder, 0) + 1
            count = self._counts.get(holder, 0)
        if near:
            log.warning(
                "probe pattern: %s searched a near-duplicate of one of its last %d probes (%d so far)",
                holder,
                self.ring,
                count,
            )
        return near

    def near_duplicates(self, holder: str) -> int:
        """Near-duplicate probes seen from ``holder`` by this process."""
        with self._lock:
            return self._counts.get(holder, 0)


_lock = threading.Lock()
_process: ProbePatterns | None = None


def process_patterns(settings: Settings) -> ProbePatterns:
    """This process's rings (a worker's), built once from the settings."""
    global _process
    with _lock:
        if _process is None:
            _process = ProbePatterns(settings.api_probe_ring, settings.api_probe_near_bits)
        return _process

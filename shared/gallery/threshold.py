"""The 1:N operating point: the cosine a gallery hit must reach for a stated FPIR at size N.

A stranger searched against N enrolled faces gets N chances of a false accept. If one
comparison falsely accepts with probability ``f``, the chance that at least one of N does is
``FPIR = 1 - (1 - f)^N``; solving for ``f`` gives the per-comparison FAR to ask the calibration
for, ``f = 1 - (1 - FPIR)^(1/N)``, and the confidence map's ``far_table`` (all impostor pairs
of the calibration set) turns it into a cosine threshold. Independence of the N comparisons is
an approximation; ``bench/gallery_calibrate.py`` measures the FPIR it really gives on LFW.

The threshold never drops below the 1:1 verification threshold: ``verified`` in a gallery
search is never weaker than in ``match_faces``.
"""

from __future__ import annotations

import math

from shared.calibration import ConfidenceMap


def per_comparison_far(fpir: float, gallery_size: int) -> float:
    """The per-comparison FAR that gives ``fpir`` over ``gallery_size`` independent comparisons."""
    if not 0.0 < fpir < 1.0:
        raise ValueError("fpir must be in (0, 1)")
    # expm1/log1p keep the answer exact when fpir / N is far below float epsilon of 1.
    return -math.expm1(math.log1p(-fpir) / max(1, gallery_size))


def gallery_threshold(cmap: ConfidenceMap, fpir: float, gallery_size: int, verify_confidence: float) -> float:
    """Cosine threshold for a hit in a gallery of ``gallery_size`` faces.

    Args:
        cmap: the embedding model's confidence map.
        fpir: target false-positive identification rate (a stranger's chance of any hit).
        gallery_size: faces enrolled.
        verify_confidence: the 1:1 threshold (as a confidence), a floor for the gallery's.

    Returns:
        The larger of the 1:N cosine for ``fpir`` and the 1:1 cosine for ``verify_confidence``.
    """
    one_to_one = cmap.cosine_for(verify_confidence)
    return max(one_to_one, cmap.cosine_at_far(per_comparison_far(fpir, gallery_size)))

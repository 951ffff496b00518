"""Request bodies of ``POST /v1/jobs``: one model per registered job kind, told apart by ``kind``.

The models live in :mod:`shared.events.bodies`, where the intake validates its requests with
the same ones (so an intake reject and a 422 give the same reasons). Whether a bucket may be
read and whether a callback is allowed is checked by the route (:func:`check_request`).
"""

from __future__ import annotations

from shared.events.bodies import REQUEST_MODELS, check_request, image_fields
from shared.events.bodies import JobRequestBody as JobRequest

__all__ = ["REQUEST_MODELS", "JobRequest", "check_request", "image_fields"]

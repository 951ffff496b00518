"""Portable face features: base64 of a small versioned binary, sealed by the server.

Layout (little-endian), format version 2::

    b"KF"  magic
    u8     format version (2)
    u8     length of the model id
    ...    model id, ASCII
    u16    dimension D
    D*f4   L2-normalised float32 vector
    u8     length of the key id
    ...    key id, ASCII
    32     HMAC-SHA256 tag over every byte before it, with the key named by the key id

The model id travels with the vector so features of two different models are never compared.
The tag makes features an output of this service only: ``match``, ``search`` and ``enroll``
refuse any vector the engine did not issue (a crafted basis vector, an altered template), so
the gallery can no longer be probed with chosen vectors. Keys rotate: features are sealed with
the current key (``KYC_FEATURES_KEY``) and accepted under it or any older one still listed in
``KYC_FEATURES_KEYS_ACCEPTED``. With no key configured a process seals with a random key of its
own (features then verify only inside that process: the library, the CLI, the embedded demo);
workers and the API refuse to start that way unless ``KYC_FEATURES_EPHEMERAL_KEY`` allows it
(:func:`require_key`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import struct
import threading
from dataclasses import dataclass, field

import numpy as np

from shared.config import Settings, get_settings
from shared.errors import FeaturesError, SettingsError

log = logging.getLogger(__name__)

_MAGIC = b"KF"
_VERSION = 2
_MAX_DIM = 4096
_NORM_TOLERANCE = 1e-3
_TAG_BYTES = 32
_MIN_SECRET_CHARS = 32
EPHEMERAL_KEY_ID = "ephemeral"


@dataclass(frozen=True)
class Features:
    """A decoded features string; ``text`` is the string itself, so it travels without re-encoding."""

    model_id: str
    vector: np.ndarray  # float32, shape (D,), unit norm
    text: str = ""

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class KeyRing:
    """The sealing key (``current``, by key id) and every key whose seals are still accepted."""

    current: str
    secrets: dict[str, bytes] = field(repr=False)

    @property
    def ephemeral(self) -> bool:
        return self.current == EPHEMERAL_KEY_ID

    def tag(self, key_id: str, body: bytes) -> bytes:
        return hmac.new(self.secrets[key_id], body, hashlib.sha256).digest()


def _parse_key(spec: str, setting: str) -> tuple[str, bytes]:
    key_id, sep, secret = spec.partition(":")
    if not sep or not key_id or not key_id.isascii() or len(key_id) > 64 or not key_id.isprintable():
        raise SettingsError(f"{setting}: expected '<key id>:<secret>' with an ASCII key id of 1-64 characters")
    if key_id == EPHEMERAL_KEY_ID:
        raise SettingsError(f"{setting}: the key id {EPHEMERAL_KEY_ID!r} is reserved")
    if len(secret) < _MIN_SECRET_CHARS:
        raise SettingsError(f"{setting}: the secret must be at least {_MIN_SECRET_CHARS} characters")
    return key_id, secret.encode()


def key_ring_from(settings: Settings) -> KeyRing:
    """The key ring the settings describe; a random per-process key when none is configured.

    Raises:
        SettingsError: a malformed key, or an accepted key id listed twice.
    """
    if settings.features_key is None:
        return KeyRing(EPHEMERAL_KEY_ID, {EPHEMERAL_KEY_ID: secrets.token_bytes(32)})
    current, secret = _parse_key(settings.features_key.get_secret_value(), "KYC_FEATURES_KEY")
    ring = {current: secret}
    for old in settings.features_keys_accepted:
        key_id, value = _parse_key(old.get_secret_value(), "KYC_FEATURES_KEYS_ACCEPTED")
        if key_id in ring:
            raise SettingsError(f"KYC_FEATURES_KEYS_ACCEPTED: key id {key_id!r} is given twice")
        ring[key_id] = value
    return KeyRing(current, ring)


_lock = threading.Lock()
_ring: KeyRing | None = None


def key_ring() -> KeyRing:
    """This process's key ring, from :func:`shared.config.get_settings`, built once."""
    global _ring
    with _lock:
        if _ring is None:
            _ring = key_ring_from(get_settings())
            if _ring.ephemeral:
                log.warning("KYC_FEATURES_KEY is not set: features are sealed with a key of this process only")
        return _ring


def require_key(settings: Settings, who: str) -> None:
    """Refuse a service (``who``: worker, api) that would seal with a key nobody else shares.

    Raises:
        SettingsError: no ``KYC_FEATURES_KEY`` and no ``KYC_FEATURES_EPHEMERAL_KEY=true``.
    """
    if settings.features_key is None and not settings.features_ephemeral_key:
        raise SettingsError(
            f"kycdeepface {who}: KYC_FEATURES_KEY is not set (features must be sealed with a shared "
            "secret key); set KYC_FEATURES_EPHEMERAL_KEY=true to run with a per-process key in development"
        )
    key_ring_from(settings)  # a malformed key stops the service here, not on its first job


DIGEST_PREFIX = "sha256:"


def digest(decoded: Features) -> str:
    """A reference to a template that does not reveal it (``sha256:<hex>`` of its model id and
    vector): the same for every seal of the same vector, so erasure finds it under any key."""
    return _digest_body(decoded.model_id, decoded.vector.astype("<f4").tobytes())


def digest_of_string(features: str) -> str:
    """:func:`digest` of a features string, hashed from its vector bytes without decoding them
    (a finish indexes every template of its result). The layout is checked; the seal and the
    norm are not, as for templates read back with ``decode(..., sealed=False)``.

    Raises:
        FeaturesError: the string is not a features blob.
    """
    _, model_id, vector_bytes, _ = _unpack(features)
    return _digest_body(model_id, vector_bytes)


def _digest_body(model_id: str, vector_bytes: bytes) -> str:
    return DIGEST_PREFIX + hashlib.sha256(model_id.encode("ascii") + b"\0" + vector_bytes).hexdigest()


def is_digest(value: str) -> bool:
    hexpart = value[len(DIGEST_PREFIX) :]
    return value.startswith(DIGEST_PREFIX) and len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart)


def encode(model_id: str, vector: np.ndarray, ring: KeyRing | None = None) -> str:
    """Serialise and seal one embedding; the vector is L2-normalised here so every stored copy is."""
    ring = ring or key_ring()
    mid = model_id.encode("ascii")
    if not 0 < len(mid) < 256:
        raise FeaturesError("model id must be 1-255 ASCII characters")
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0 or not 0 < v.size <= _MAX_DIM:
        raise FeaturesError("cannot encode a zero, non-finite or oversized embedding")
    v = (v / norm).astype("<f4")
    kid = ring.current.encode("ascii")
    body = _MAGIC + struct.pack("<BB", _VERSION, len(mid)) + mid + struct.pack("<H", v.size) + v.tobytes()
    body += struct.pack("<B", len(kid)) + kid
    return base64.b64encode(body + ring.tag(ring.current, body)).decode("ascii")


def decode(features: str | bytes | Features, ring: KeyRing | None = None, *, sealed: bool = True) -> Features:
    """Parse and check a features string (one already decoded is returned as it is).

    Args:
        features: the string.
        ring: the keys to check the seal with (default: this process's).
        sealed: False only for templates read back from our own gallery store, which were
            checked when they were enrolled (a key retired since must not unload a gallery).

    Raises:
        FeaturesError: naming what is wrong; an unknown key id or a wrong tag is "not sealed by
            this service", never which byte differs.
    """
    if isinstance(features, Features):
        return features
    blob, model_id, vector_bytes, kid = _unpack(features)
    if sealed:
        _check_seal(blob, kid, ring or key_ring())
    vector = np.frombuffer(vector_bytes, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(vector)) or abs(float(np.linalg.norm(vector)) - 1.0) > _NORM_TOLERANCE:
        raise FeaturesError("features vector is not a finite unit vector")
    text = features if isinstance(features, str) else features.decode("ascii")
    return Features(model_id=model_id, vector=vector, text=text)


def _unpack(features: str | bytes) -> tuple[bytes, str, bytes, bytes]:
    """The blob, its model id, its vector's bytes and its key id, with the layout checked."""
    raw = features.encode("ascii", errors="replace") if isinstance(features, str) else features
    if not isinstance(raw, bytes) or not raw:
        raise FeaturesError("features must be a non-empty base64 string")
    try:
        blob = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise FeaturesError("features are not valid base64") from None
    if len(blob) < 6 or blob[:2] != _MAGIC:
        raise FeaturesError("features are not a KYCDeepFace features blob (bad magic)")
    version, mid_len = struct.unpack_from("<BB", blob, 2)
    if version != _VERSION:
        raise FeaturesError(f"unsupported features format version {version} (features must be sealed)")
    head = 4 + mid_len
    if len(blob) < head + 2:
        raise FeaturesError("features blob is truncated")
    try:
        model_id = blob[4:head].decode("ascii")
    except UnicodeDecodeError:
        raise FeaturesError("features carry a malformed model id") from None
    (dim,) = struct.unpack_from("<H", blob, head)
    end = head + 2 + 4 * dim
    if not 0 < dim <= _MAX_DIM or len(blob) < end + 1:
        raise FeaturesError("features blob length does not match its dimension")
    kid_len = blob[end]
    if len(blob) != end + 1 + kid_len + _TAG_BYTES:
        raise FeaturesError("features blob length does not match its dimension")
    return blob, model_id, blob[head + 2 : end], blob[end + 1 : end + 1 + kid_len]


def _check_seal(blob: bytes, kid: bytes, ring: KeyRing) -> None:
    key_id = kid.decode("ascii", errors="replace")
    body, tag = blob[:-_TAG_BYTES], blob[-_TAG_BYTES:]
    if key_id not in ring.secrets or not hmac.compare_digest(ring.tag(key_id, body), tag):
        raise FeaturesError("features are not sealed by this service (unknown key or altered blob)")


def decode_pair(a: str | bytes | Features, b: str | bytes | Features) -> tuple[Features, Features]:
    fa, fb = decode(a), decode(b)
    if fa.model_id != fb.model_id:
        raise FeaturesError(f"features come from different models: {fa.model_id!r} vs {fb.model_id!r}")
    if fa.vector.size != fb.vector.size:
        raise FeaturesError("features have different dimensions")
    return fa, fb

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

Format version 3 is the same face sealed for one tenant (every tenant but ``default``)::

    b"KF"  magic
    u8     format version (3)
    u8, .. model id, as above
    u16    dimension D
    u8, .. tenant, ASCII
    u8, .. key id, ASCII
    16     nonce
    D*f4   the vector, AES-256-CTR encrypted
    32     HMAC-SHA256 tag over every byte before it

Both keys are derived from the sealing key of the key id and the tenant (HKDF-SHA256), so the same
face gives two unrelated strings in two tenants (no common bytes, no readable vector: unlinkable),
and a string of one tenant is refused by another (:func:`check_tenant`). The nonce is an HMAC of
the vector under the tenant's key, so one face gives one string per tenant and key. Inside the
service every template is the version-2 string of the deployment key; a tenant's results are
sealed for it where it reads them (:func:`seal_for`), and its strings are checked where its jobs
are made. The default tenant keeps version 2, so strings sealed before tenants existed still
verify there (docs/OPERATIONS.md, "Tenant-bound features").

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
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.config import Settings, get_settings
from shared.errors import FeaturesError, ForeignFeaturesError, SettingsError
from shared.tenants import DEFAULT_TENANT, Tenant

log = logging.getLogger(__name__)

_MAGIC = b"KF"
_VERSION = 2
_TENANT_VERSION = 3  # sealed for one tenant, vector encrypted
_NONCE_BYTES = 16
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
    tenant: str = DEFAULT_TENANT  # whom the string was sealed for (format 3; format 2: default)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class KeyRing:
    """The sealing key (``current``, by key id) and every key whose seals are still accepted."""

    current: str
    secrets: dict[str, bytes] = field(repr=False)
    _derived: dict[tuple[str, str], tuple[bytes, bytes]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ephemeral(self) -> bool:
        return self.current == EPHEMERAL_KEY_ID

    def tag(self, key_id: str, body: bytes) -> bytes:
        return hmac.new(self.secrets[key_id], body, hashlib.sha256).digest()

    def tenant_keys(self, key_id: str, tenant: str) -> tuple[bytes, bytes]:
        """The MAC key and the cipher key of ``tenant`` under ``key_id`` (HKDF-SHA256 of the key's
        secret, the tenant in its info), derived once."""
        found = self._derived.get((key_id, tenant))
        if found is None:
            info = b"kycdeepface:features:tenant:" + tenant.encode("ascii")
            okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=info).derive(self.secrets[key_id])
            found = self._derived[(key_id, tenant)] = (okm[:32], okm[32:])
        return found


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
    norm are not, as for templates read back with ``decode(..., sealed=False)``. A string sealed
    for a tenant is deciphered first, so its digest is the same as the service's own string's.

    Raises:
        FeaturesError: the string is not a features blob, or is sealed for a tenant under a key
            this process does not hold.
    """
    blob = _unpack(features)
    return _digest_body(blob.model_id, _plain_vector(blob, key_ring()))


def _digest_body(model_id: str, vector_bytes: bytes) -> str:
    return DIGEST_PREFIX + hashlib.sha256(model_id.encode("ascii") + b"\0" + vector_bytes).hexdigest()


def is_digest(value: str) -> bool:
    hexpart = value[len(DIGEST_PREFIX) :]
    return value.startswith(DIGEST_PREFIX) and len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart)


def encode(model_id: str, vector: np.ndarray, ring: KeyRing | None = None, tenant: str = DEFAULT_TENANT) -> str:
    """Serialise and seal one embedding; the vector is L2-normalised here so every stored copy is.

    ``tenant`` other than the default seals it for that tenant (format 3, vector encrypted).
    """
    ring = ring or key_ring()
    mid = model_id.encode("ascii")
    if not 0 < len(mid) < 256:
        raise FeaturesError("model id must be 1-255 ASCII characters")
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0 or not 0 < v.size <= _MAX_DIM:
        raise FeaturesError("cannot encode a zero, non-finite or oversized embedding")
    return _seal(mid, (v / norm).astype("<f4").tobytes(), ring, tenant)


def _seal(mid: bytes, plain: bytes, ring: KeyRing, tenant: str) -> str:
    """The sealed string of a vector's exact bytes (never normalised again: a reseal keeps the
    digest)."""
    kid = ring.current.encode("ascii")
    head = _MAGIC + struct.pack("<BB", _VERSION if tenant == DEFAULT_TENANT else _TENANT_VERSION, len(mid)) + mid
    head += struct.pack("<H", len(plain) // 4)
    if tenant == DEFAULT_TENANT:
        body = head + plain + struct.pack("<B", len(kid)) + kid
        return base64.b64encode(body + ring.tag(ring.current, body)).decode("ascii")
    name = Tenant(tenant).encode("ascii")
    mac_key, cipher_key = ring.tenant_keys(ring.current, tenant)
    # Deterministic (an HMAC of the vector under the tenant's key): one string per face, tenant
    # and key, as format 2 has; nothing in it is shared with another tenant's string.
    nonce = hmac.new(mac_key, b"nonce\0" + mid + b"\0" + plain, hashlib.sha256).digest()[:_NONCE_BYTES]
    body = head + struct.pack("<B", len(name)) + name + struct.pack("<B", len(kid)) + kid + nonce
    body += _ctr(cipher_key, nonce, plain)
    return base64.b64encode(body + hmac.new(mac_key, body, hashlib.sha256).digest()).decode("ascii")


def seal_for(features: str, tenant: str, ring: KeyRing | None = None) -> str:
    """``features`` (sealed by this service, for any tenant) as sealed for ``tenant``: the
    service's own string is re-sealed for a tenant where the tenant reads it, and a tenant's
    string back for the service (``tenant`` default) where it is stored. A string sealed under an
    older key is re-sealed under the current one (rotation); one already sealed for ``tenant``
    under the current key is returned as it is.

    Raises:
        FeaturesError: the string is malformed or not sealed by this service.
    """
    ring = ring or key_ring()
    decoded = decode(features, ring)
    if decoded.tenant == tenant and _unpack(decoded.text).key_id == ring.current.encode("ascii"):
        return decoded.text
    return _seal(decoded.model_id.encode("ascii"), decoded.vector.astype("<f4").tobytes(), ring, tenant)


def check_tenant(decoded: Features, tenant: str, settings: Settings | None = None) -> None:
    """Refuse features that were not sealed for ``tenant``.

    A string sealed before features were bound to tenants (format 2, the default tenant's) is
    accepted for another tenant only while ``KYC_FEATURES_UNTENANTED_ACCEPTED`` is on (migration).

    Raises:
        ForeignFeaturesError: sealed for another tenant.
    """
    if decoded.tenant == tenant:
        return
    if decoded.tenant == DEFAULT_TENANT and (settings or get_settings()).features_untenanted_accepted:
        return
    raise ForeignFeaturesError("features are not sealed for this tenant (they were issued to another)")


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
    blob = _unpack(features)
    ring = ring or key_ring()
    if sealed:
        _check_seal(blob, ring)
    vector = np.frombuffer(_plain_vector(blob, ring), dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(vector)) or abs(float(np.linalg.norm(vector)) - 1.0) > _NORM_TOLERANCE:
        raise FeaturesError("features vector is not a finite unit vector")
    text = features if isinstance(features, str) else features.decode("ascii")
    return Features(model_id=blob.model_id, vector=vector, text=text, tenant=blob.tenant)


@dataclass(frozen=True)
class _Blob:
    """A features blob's parts, its layout checked (format 2 or 3)."""

    raw: bytes
    model_id: str
    vector_bytes: bytes  # plain (format 2) or encrypted (format 3)
    key_id: bytes
    tenant: str = DEFAULT_TENANT
    nonce: bytes = b""


def _field(blob: bytes, at: int) -> tuple[bytes, int]:
    """A length-prefixed field at ``at``: its bytes and the offset past it."""
    if len(blob) < at + 1 or len(blob) < at + 1 + blob[at]:
        raise FeaturesError("features blob is truncated")
    return blob[at + 1 : at + 1 + blob[at]], at + 1 + blob[at]


def _unpack(features: str | bytes) -> _Blob:
    """The blob's parts, with the layout checked."""
    raw = features.encode("ascii", errors="replace") if isinstance(features, str) else features
    if not isinstance(raw, bytes) or not raw:
        raise FeaturesError("features must be a non-empty base64 string")
    try:
        blob = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise FeaturesError("features are not valid base64") from None
    if len(blob) < 6 or blob[:2] != _MAGIC:
        raise FeaturesError("features are not a KYCDeepFace features blob (bad magic)")
    version = blob[2]
    if version not in (_VERSION, _TENANT_VERSION):
        raise FeaturesError(f"unsupported features format version {version} (features must be sealed)")
    mid, at = _field(blob, 3)
    try:
        model_id = mid.decode("ascii")
    except UnicodeDecodeError:
        raise FeaturesError("features carry a malformed model id") from None
    if len(blob) < at + 2:
        raise FeaturesError("features blob is truncated")
    (dim,) = struct.unpack_from("<H", blob, at)
    if not 0 < dim <= _MAX_DIM:
        raise FeaturesError("features blob length does not match its dimension")
    at += 2
    if version == _VERSION:
        vector, at = blob[at : at + 4 * dim], at + 4 * dim
        kid, at = _field(blob, at)
        if len(vector) != 4 * dim or len(blob) != at + _TAG_BYTES:
            raise FeaturesError("features blob length does not match its dimension")
        return _Blob(blob, model_id, vector, kid)
    name, at = _field(blob, at)
    kid, at = _field(blob, at)
    nonce, at = blob[at : at + _NONCE_BYTES], at + _NONCE_BYTES
    vector = blob[at : at + 4 * dim]
    if len(nonce) != _NONCE_BYTES or len(blob) != at + 4 * dim + _TAG_BYTES:
        raise FeaturesError("features blob length does not match its dimension")
    try:
        tenant = Tenant(name.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise FeaturesError("features carry a malformed tenant") from None
    return _Blob(blob, model_id, vector, kid, tenant, nonce)


def _ctr(key: bytes, nonce: bytes, data: bytes) -> bytes:
    """AES-256-CTR of ``data`` (the same call enciphers and deciphers)."""
    worker = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    return worker.update(data) + worker.finalize()


def _plain_vector(blob: _Blob, ring: KeyRing) -> bytes:
    if blob.tenant == DEFAULT_TENANT:
        return blob.vector_bytes
    key_id = blob.key_id.decode("ascii", errors="replace")
    if key_id not in ring.secrets:
        raise FeaturesError("features are not sealed by this service (unknown key or altered blob)")
    return _ctr(ring.tenant_keys(key_id, blob.tenant)[1], blob.nonce, blob.vector_bytes)


def _check_seal(blob: _Blob, ring: KeyRing) -> None:
    key_id = blob.key_id.decode("ascii", errors="replace")
    body, tag = blob.raw[:-_TAG_BYTES], blob.raw[-_TAG_BYTES:]
    if key_id in ring.secrets:
        if blob.tenant == DEFAULT_TENANT:
            expected = ring.tag(key_id, body)
        else:
            expected = hmac.new(ring.tenant_keys(key_id, blob.tenant)[0], body, hashlib.sha256).digest()
        if hmac.compare_digest(expected, tag):
            return
    raise FeaturesError("features are not sealed by this service (unknown key or altered blob)")


def decode_pair(a: str | bytes | Features, b: str | bytes | Features) -> tuple[Features, Features]:
    fa, fb = decode(a), decode(b)
    if fa.model_id != fb.model_id:
        raise FeaturesError(f"features come from different models: {fa.model_id!r} vs {fb.model_id!r}")
    if fa.vector.size != fb.vector.size:
        raise FeaturesError("features have different dimensions")
    return fa, fb

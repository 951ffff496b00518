"""Gallery templates encrypted at rest in Redis: AES-256-GCM, keys derived from the features keys.

Why (docs/OPERATIONS.md, "Templates"): a Redis dump, an AOF file or a backup then holds no
template, and a template written into Redis by anyone without the key is refused when read
(the tag authenticates it, bound to its gallery and face id, so one face's ciphertext cannot be
moved under another's id). The index decrypts once per template as it loads or replays the log.

A stored value is ``kge1:<key id>:<base64 of nonce (12 bytes) + ciphertext + tag>``; the key of
each key id is HMAC-SHA256(secret, "kycdeepface:gallery-at-rest"), so a rotated features key keeps
the templates it encrypted readable while it stays in ``KYC_FEATURES_KEYS_ACCEPTED``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared import features
from shared.features import KeyRing

log = logging.getLogger(__name__)

PREFIX = "kge1:"
_PURPOSE = b"kycdeepface:gallery-at-rest"


class TemplateCipher:
    """Encrypts and decrypts one gallery store's templates.

    Args:
        ring: the features key ring; templates are encrypted under its current key.
        gallery: the store's name, bound into every ciphertext with the face id.
    """

    def __init__(self, ring: KeyRing, gallery: str) -> None:
        self._ring = ring
        self._gallery = gallery.encode()
        self._aead = {
            kid: AESGCM(hmac.new(secret, _PURPOSE, hashlib.sha256).digest()) for kid, secret in ring.secrets.items()
        }

    def _aad(self, face_id: str) -> bytes:
        return self._gallery + b"\0" + face_id.encode()

    def seal(self, face_id: str, text: str) -> str:
        nonce = os.urandom(12)
        body = self._aead[self._ring.current].encrypt(nonce, text.encode("ascii"), self._aad(face_id))
        return f"{PREFIX}{self._ring.current}:{base64.b64encode(nonce + body).decode('ascii')}"

    def open(self, face_id: str, value: str) -> str | None:
        """The features string, or None (logged) for a value this service did not write: a
        ciphertext that does not authenticate, or a plain template without a valid seal."""
        if not value.startswith(PREFIX):
            try:  # written before encryption was on: kept only if this service sealed it
                features.decode(value, self._ring)
            except features.FeaturesError:
                log.error("gallery %s: template of %r is neither encrypted nor sealed; ignored", self._gallery, face_id)
                return None
            return value
        kid, _, payload = value[len(PREFIX) :].partition(":")
        try:
            blob = base64.b64decode(payload, validate=True)
            return self._aead[kid].decrypt(blob[:12], blob[12:], self._aad(face_id)).decode("ascii")
        except (KeyError, InvalidTag, binascii.Error, ValueError):
            log.error(
                "gallery %s: template of %r does not decrypt (unknown key or altered); ignored", self._gallery, face_id
            )
            return None


def cipher_for(gallery: str) -> TemplateCipher | None:
    """This process's cipher for a gallery store; None with an ephemeral features key (the
    templates must outlive the process), which stores them as sealed features strings."""
    ring = features.key_ring()
    return None if ring.ephemeral else TemplateCipher(ring, gallery)

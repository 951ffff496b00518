"""Image storage: one interface (:class:`ImageStore`), an S3 and a local backend, and a store that
routes each reference to its backend."""

from shared.storage.base import ImageStore
from shared.storage.factory import RoutingStore, store_for
from shared.storage.local import LocalStore
from shared.storage.refs import Ref, parse_ref
from shared.storage.s3 import S3Store

__all__ = ["ImageStore", "LocalStore", "Ref", "RoutingStore", "S3Store", "parse_ref", "store_for"]

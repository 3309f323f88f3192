"""The blob store: original archives and kept upload bytes, by SHA-256 (SPEC §5).

Two implementations of one :class:`BlobStore` protocol:

- :class:`LocalBlobs` (``SKILLSVC_BLOB_STORE`` unset): files ``blobs/sha256/<hex>`` and
  ``kept/sha256/<hex>`` under the file store's root, as the service always kept them;
- :class:`S3Blobs` (``SKILLSVC_BLOB_STORE=s3://bucket/prefix``): the same layout as
  keys in an S3-compatible bucket that every replica, on any host, shares.

The file store (:mod:`skillsvc.store`) keeps the extracted packages; each node has its
own. This package imports neither gRPC nor the database driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from skillsvc.blobs._base import (
    CORRUPT_REASON,
    KINDS,
    MISSING_REASON,
    STREAM_CHUNK_BYTES,
    UNAVAILABLE_REASON,
    BlobStore,
    Kind,
)
from skillsvc.blobs._local import LocalBlobs
from skillsvc.blobs._s3 import S3Blobs

__all__ = [
    "CORRUPT_REASON",
    "KINDS",
    "MISSING_REASON",
    "STREAM_CHUNK_BYTES",
    "UNAVAILABLE_REASON",
    "BlobStore",
    "Kind",
    "LocalBlobs",
    "S3Blobs",
    "open_blob_store",
]


def open_blob_store(
    url: str, store_root: Path, options: Mapping[str, str] | None = None
) -> BlobStore:
    """The blob store ``url`` names: ``""`` for local blobs under ``store_root``, or
    ``s3://bucket/prefix`` (``options`` override the AWS environment, e.g. in tests)."""
    if not url:
        return LocalBlobs(store_root)
    return S3Blobs(url, options)

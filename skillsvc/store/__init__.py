"""The file store: packages, original archives and a private staging area.

Layout under the root (SPEC §5)::

    packages/<skill_id>/<version>/   extracted, read-only
    packages/<skill_id>/current      symlink to the current version
    packages/<skill_id>/.<version>.sha256
                                     symlink whose target is the SHA-256 of the archive
                                     the version's tree was placed from
    blobs/sha256/<hex>               original archives of installed packages
    kept/sha256/<hex>                bytes of failed uploads, kept for Retry until gc
    staging/<instance_id>/           one private work area per server process
    staging/.trash/                  removed trees, already out of packages/
    locks/<skill_id>                 flock files: one materialisation of a skill per host

Every path built from a skill id, version or digest is checked to stay where it
belongs (``InvalidArgument`` otherwise), and nothing appears at a final path before
it is complete and on disk: trees and archives are written in staging on the same
filesystem, flushed, then renamed into place. All methods block; call them from a
worker thread. This package imports neither gRPC nor the database driver.
"""

from __future__ import annotations

from skillsvc.store._fsops import fsync_path, open_no_follow, sha256_fd, syncfs_available
from skillsvc.store._store import CURRENT, HostLock, Store, os_errors, store_error

__all__ = [
    "CURRENT",
    "HostLock",
    "Store",
    "fsync_path",
    "open_no_follow",
    "os_errors",
    "sha256_fd",
    "store_error",
    "syncfs_available",
]

"""Getting package bytes onto disk safely: uploads and URL downloads.

Both paths end in a :class:`Spooled` file inside a private staging directory the
caller owns, with its SHA-256 computed on the way in and its size counted against a
limit before any byte over it is written. Neither holds an archive in memory, and
neither leaves a partial file behind on failure.

* :class:`Spooler` receives an upload chunk by chunk.
* :func:`fetch_url` downloads from an ``http``/``https`` URL under a
  :class:`UrlPolicy`, refusing non-public addresses (checked on the address actually
  connected to, for every redirect) unless the policy allows them.

This package imports neither gRPC nor the database driver; it raises the domain errors
of :mod:`skillsvc.errors`.
"""

from __future__ import annotations

from skillsvc.intake._addresses import (
    IPAddress,
    Resolver,
    forbidden_reason,
    is_forbidden_address,
    system_resolver,
)
from skillsvc.intake._fetch import ProgressCallback, UrlPolicy, fetch_url
from skillsvc.intake._spool import Spooled, Spooler

__all__ = [
    "IPAddress",
    "ProgressCallback",
    "Resolver",
    "Spooled",
    "Spooler",
    "UrlPolicy",
    "fetch_url",
    "forbidden_reason",
    "is_forbidden_address",
    "system_resolver",
]

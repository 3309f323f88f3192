"""Opaque page tokens (AIP-158) shared by every List RPC.

A token is URL-safe base64 of a small JSON object: the position to resume after and
a fingerprint of the request's filters, so a token cannot be replayed against a
different query. Tokens are not secrets; a tampered one is merely rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from skillsvc.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class PageRequest:
    """A validated page request."""

    size: int
    """How many items to return."""
    after: Any
    """The position to resume after (JSON-compatible), or None for the first page."""


def _fingerprint(filters: Any) -> str:
    blob = json.dumps(filters, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def page_request(page_size: int, page_token: str, filters: Any) -> PageRequest:
    """Validate ``page_size`` and decode ``page_token`` for a query with ``filters``."""
    if page_size < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return PageRequest(size=size, after=None)
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        after, fingerprint = data["a"], data["f"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError):
        raise InvalidArgument.field("page_token", "not a token returned by this RPC") from None
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument.field(
            "page_token", "the request's other fields differ from those of the first page"
        )
    return PageRequest(size=size, after=after)


def next_page_token(after: Any, filters: Any) -> str:
    """The token resuming after position ``after`` of the query with ``filters``."""
    data = json.dumps({"a": after, "f": _fingerprint(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode("ascii").rstrip("=")

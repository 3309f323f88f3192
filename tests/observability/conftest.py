"""Helpers of the observability tests: scraping ``/metrics``, minting tokens."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Mapping

import jwt
from prometheus_client.parser import text_string_to_metric_families

SECRET = "observability-test-secret-" + "0123456789abcdef" * 2
"""The HS256 secret of the JWT test servers."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def mint(sub: str = "root", tenant: str = "", roles: tuple[str, ...] = ("admin",)) -> str:
    """A valid HS256 token for :data:`SECRET`."""
    now = int(time.time())
    claims = {"sub": sub, "tenant": tenant, "roles": list(roles), "iat": now, "exp": now + 600}
    return jwt.encode(claims, SECRET, "HS256")


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(port: int) -> Samples:
    """``GET /metrics`` on 127.0.0.1:``port``, parsed."""

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            return str(reply.read().decode())

    return parse(await asyncio.to_thread(get))


def value(samples: Samples, name: str, labels: Mapping[str, str] | None = None) -> float:
    """A sample's value; 0 when the series is absent."""
    return samples.get((name, frozenset((labels or {}).items())), 0.0)

"""Assigned versions: semver precedence and the next patch (SPEC §4 Install rules)."""

from __future__ import annotations

import random

import pytest

from skillsvc.core.versioning import next_version, semver_key

# semver.org §11's example chain, lowest first.
PRECEDENCE = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "1.10.0",
    "2.0.0-0",
    "2.0.0",
    "10.0.0",
]


def test_semver_precedence() -> None:
    shuffled = PRECEDENCE[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=semver_key) == PRECEDENCE
    assert semver_key("1.0.0+build.5") == semver_key("1.0.0")


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], "1.0.0"),
        (["1.0.0"], "1.0.1"),
        (["1.0.9", "1.0.10", "1.0.2"], "1.0.11"),
        (["1.9.0", "1.10.0"], "1.10.1"),
        (["2.0.0-rc.1", "1.4.2"], "2.0.0"),
        (["1.0.0+build", "0.9.0"], "1.0.1"),
        (["3.1.4-beta+exp.sha.5114f85"], "3.1.4"),
        (["not-semver"], "1.0.0"),
    ],
)
def test_next_version(existing: list[str], expected: str) -> None:
    assert next_version(existing) == expected

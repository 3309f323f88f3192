"""is_valid_skill_name and is_valid_semver tables."""

from __future__ import annotations

import pytest

from skillsvc.validation import is_valid_semver, is_valid_skill_name


@pytest.mark.parametrize(
    "name",
    ["a", "pdf-tools", "a1", "1a", "0", "a-b-c", "x" * 64, "a-" * 31 + "bc", "skill2-v3"],
)
def test_valid_names(name: str) -> None:
    assert is_valid_skill_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-a",
        "a-",
        "a--b",
        "A",
        "Pdf-tools",
        "a_b",
        "a.b",
        "a b",
        "a/b",
        "x" * 65,
        "é",
        "a\n",
        "\na",
        "\uff41",  # fullwidth a
        "\u0661",  # Arabic-Indic digit one: \d would accept it
    ],
)
def test_invalid_names(name: str) -> None:
    assert not is_valid_skill_name(name)


@pytest.mark.parametrize(
    "version",
    [
        "0.0.0",
        "1.2.3",
        "10.20.30",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92",
        "1.0.0-x-y-z.--",
        "1.0.0-alpha+001",
        "1.0.0+20130313144700",
        "1.0.0-beta+exp.sha.5114f85",
        "1.0.0+21AF26D3----117B344092BD",
        "1.0.0-0A.is.legal",
        "99999999999999999999.0.0",
        "1.2.3-" + "a" * 122,
    ],
)
def test_valid_semver(version: str) -> None:
    assert is_valid_semver(version)


@pytest.mark.parametrize(
    "version",
    [
        "",
        "1",
        "1.2",
        "1.2.3.4",
        "v1.2.3",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "1.2.3-",
        "1.2.3+",
        "1.2.3-01",
        "1.2.3-alpha..1",
        "1.2.3+build..1",
        "1.2.3-al_pha",
        "1.2.3 ",
        " 1.2.3",
        "1.2.3\n",
        "1.2.٣",  # non-ASCII digit
        "-1.2.3",
        "1.2.3-" + "a" * 123,  # over the 128-character cap
    ],
)
def test_invalid_semver(version: str) -> None:
    assert not is_valid_semver(version)

"""Settings from SKILLSVC_* variables, and the README's table of them."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from skillsvc.config import ConfigError, Settings, config_table, is_loopback_address


def test_defaults_need_no_configuration() -> None:
    settings = Settings.from_env({})
    assert settings.listen_addr == "127.0.0.1:50051"
    assert settings.data_dir == Path("skillsvc-data")
    assert settings.database_url is None
    assert settings.metrics_addr == "127.0.0.1:9464"
    assert settings.max_package_bytes == 100 * 1024 * 1024
    assert settings.store_root == (Path("skillsvc-data") / "store").resolve()


def test_workers_default_to_the_cpus_this_process_may_use() -> None:
    # The affinity mask, not os.cpu_count(): a container limited to a cpuset gets that.
    assert Settings.from_env({}).workers == len(os.sched_getaffinity(0))
    assert Settings.from_env({"SKILLSVC_WORKERS": "3"}).workers == 3
    assert Settings.from_env({"SKILLSVC_WORKERS": "1"}).workers == 1


def test_variables_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "SKILLSVC_LISTEN_ADDR": "0.0.0.0:6000",
            # Off loopback, authentication is required (SPEC §7).
            "SKILLSVC_AUTH": "jwt",
            "SKILLSVC_JWT_SECRET": "s" * 32,
            "SKILLSVC_DATABASE_URL": "postgresql://u@db/skills",
            "SKILLSVC_MAX_FILES": "20",
            "SKILLSVC_URL_ALLOW_PRIVATE": "true",
            "SKILLSVC_SHUTDOWN_GRACE_SECONDS": "2.5",
            "SKILLSVC_STORE_DIR": "/srv/store",
            "SKILLSVC_METRICS_ADDR": "",
        }
    )
    assert settings.listen_addr == "0.0.0.0:6000"
    assert settings.database_url == "postgresql://u@db/skills"
    assert settings.max_files == 20
    assert settings.url_allow_private is True
    assert settings.shutdown_grace_seconds == 2.5
    assert settings.store_root == Path("/srv/store")
    assert settings.metrics_addr == ""


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("SKILLSVC_MAX_FILES", "many", "integer"),
        ("SKILLSVC_MAX_FILES", "0", "greater than 0"),
        ("SKILLSVC_WORKERS", "0", "greater than 0"),
        ("SKILLSVC_WORKERS", "two", "integer"),
        ("SKILLSVC_URL_ALLOW_PRIVATE", "perhaps", "true or false"),
        ("SKILLSVC_LISTEN_ADDR", "localhost", "host:port"),
        ("SKILLSVC_LISTEN_ADDR", "h:99999", "host:port"),
        ("SKILLSVC_DATABASE_URL", "mysql://x", "postgresql://"),
        ("SKILLSVC_SHUTDOWN_GRACE_SECONDS", "-1", "negative"),
        ("SKILLSVC_LOG_LEVEL", "LOUD", "DEBUG"),
        ("SKILLSVC_MAX_MESSAGE_BYTES", "0", "greater than 0"),
        ("SKILLSVC_MAX_CONCURRENT_STREAMS", "0", "greater than 0"),
        ("SKILLSVC_KEEPALIVE_SECONDS", "0", "greater than 0"),
        ("SKILLSVC_KEEPALIVE_MIN_PING_SECONDS", "-1", "negative"),
        ("SKILLSVC_MAX_CONNECTION_AGE_SECONDS", "soon", "a number"),
        ("SKILLSVC_MAX_CONNECTION_AGE_GRACE_SECONDS", "-5", "negative"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: value})
    assert str(info.value).startswith(f"{variable}:")
    assert words in str(info.value)


def test_loopback_detection() -> None:
    assert is_loopback_address("127.0.0.1:1")
    assert is_loopback_address("[::1]:1")
    assert is_loopback_address("localhost:1")
    assert not is_loopback_address("0.0.0.0:1")
    assert not is_loopback_address("10.0.0.1:1")


def test_readme_documents_every_variable(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    assert config_table() in readme, "README configuration table is stale: run `skillsvc config`"
    for field in dataclasses.fields(Settings):
        if field.metadata["env"] is not None:  # blob_store_options: set by callers only
            assert f"`{field.metadata['env']}`" in readme

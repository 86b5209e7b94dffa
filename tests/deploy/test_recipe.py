"""The recipe's files that the cluster tests do not run: the systemd unit and the settings file.

The unit is checked by systemd itself (``systemd-analyze verify``, with ExecStart pointed at this
checkout's ``gatehouse``); the settings file and the credentials the unit loads must be settings
Gatehouse knows, and together make a valid production configuration."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gatehouse.core.config import Settings, load_settings
from tests.support import require_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "systemd" / "gatehouse@.service"
ENV_EXAMPLE = DEPLOY / "gatehouse.env.example"
KNOWN = {f"GATEHOUSE_{name.upper()}" for name in Settings.model_fields}


def credentials() -> list[tuple[str, str]]:
    return re.findall(r"^LoadCredential=(\w+):/etc/gatehouse/credentials/(\w+)$", UNIT.read_text(), re.MULTILINE)


def example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#"))
    return {name: value for name, value in pairs}


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd checks the recipe's unit file")
    gatehouse = shutil.which("gatehouse", path=str(Path(sys.executable).parent))
    assert gatehouse is not None
    unit = tmp_path / "gatehouse@8001.service"
    unit.write_text(UNIT.read_text().replace("/opt/gatehouse/bin/gatehouse", gatehouse))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_the_unit_loads_each_secret_by_its_own_name() -> None:
    loaded = credentials()
    assert len(loaded) >= 5
    for name, file in loaded:
        assert name == file and name in KNOWN, name
    assert not set(example()) & {name for name, _ in loaded}, "a secret in the shared settings file"


def test_the_settings_file_and_credentials_make_a_production_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = example()
    assert set(settings) <= KNOWN, f"unknown settings: {set(settings) - KNOWN}"
    for name in list(KNOWN) + ["GATEHOUSE_SECRETS_DIR"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    values = {
        "GATEHOUSE_DATABASE_URL": "postgresql://gatehouse:pw@db.internal:5432/gatehouse",
        "GATEHOUSE_JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
        "GATEHOUSE_PUBLISHABLE_KEY": "sb_publishable_" + "p" * 32,
        "GATEHOUSE_SECRET_KEY": "sb_secret_" + "s" * 32,
        "GATEHOUSE_AUTHENTICATOR_PASSWORD": "a" * 32,
    }
    for name, _ in credentials():
        (tmp_path / name).write_text(values[name] + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))  # what systemd sets for LoadCredential=
    loaded = load_settings()
    assert loaded.environment == "production"
    assert loaded.database_url == values["GATEHOUSE_DATABASE_URL"]
    assert loaded.secret_key == values["GATEHOUSE_SECRET_KEY"]
    assert loaded.trusted_proxies == "10.0.0.5" and loaded.storage_backend == "s3"

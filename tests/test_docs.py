"""The documentation of the settings keeps up with service/settings.py."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented_and_every_documented_one_exists() -> None:
    documented = (ROOT / "docs" / "configuration.md").read_text()
    names = {f"KEYDIR_{name.upper()}" for name in Settings.model_fields}
    missing = sorted(name for name in names if f"`{name}`" not in documented)
    assert not missing, f"docs/configuration.md does not describe {missing}"
    rows = {line.split("`")[1] for line in documented.splitlines() if line.startswith("| `KEYDIR_")}
    assert rows <= names, f"docs/configuration.md describes unknown settings {rows - names}"


def test_every_setting_has_a_description() -> None:
    assert all(field.description for field in Settings.model_fields.values())

"""The report limits are settings: notifier.toml [bounces], overridden by the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.config import ReportLimits, load_settings
from notifier.errors import ConfigError


def test_defaults_without_a_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.bounce_limits == ReportLimits()
    assert ReportLimits() == ReportLimits(max_bytes=10 * 1024 * 1024, max_depth=32, max_parts=500)


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text("[bounces]\nmax_bytes = 2000000\nmax_depth = 8\n", encoding="utf-8")
    from_file = load_settings(config, env={}).bounce_limits
    assert from_file == ReportLimits(max_bytes=2_000_000, max_depth=8)
    from_env = load_settings(config, env={"NOTIFIER_BOUNCE_MAX_DEPTH": "12"}).bounce_limits
    assert (from_env.max_bytes, from_env.max_depth) == (2_000_000, 12)


@pytest.mark.parametrize("value", ['"big"', "0", "-1", "1.5", "true"])
def test_bad_limit_names_the_field(tmp_path: Path, value: str) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text(f"[bounces]\nmax_parts = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    assert caught.value.field == "bounces.max_parts"
    assert caught.value.file == str(config)

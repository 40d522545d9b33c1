"""Settings precedence: flag > environment > notifier.toml > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.config import DEFAULT_SMTP_URL, load_settings
from notifier.errors import ConfigError

CONFIG = """
ledger = "from-file.db"
[smtp]
url = "smtp://mail.example.org:2525"
rate = 12.5
[sender]
from = "DPO <dpo@example.org>"
reply_to.en = "help@example.org"
reply_to.ja = "help-ja@example.jp"
"""


def test_defaults_without_file_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, env={})
    assert settings.smtp_url == DEFAULT_SMTP_URL
    assert settings.rate == 0
    assert settings.ledger == Path("notifier.db")


def test_file_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "notifier.toml"
    path.write_text(CONFIG, encoding="utf-8")
    settings = load_settings(path, env={})
    assert settings.ledger == tmp_path / "from-file.db"  # beside the settings that name it
    assert settings.smtp_url == "smtp://mail.example.org:2525"
    assert settings.rate == 12.5
    assert settings.sender_from == "DPO <dpo@example.org>"
    assert settings.reply_to == {"en": "help@example.org", "ja": "help-ja@example.jp"}


def test_environment_beats_file_and_flag_beats_environment(tmp_path: Path) -> None:
    path = tmp_path / "notifier.toml"
    path.write_text(CONFIG, encoding="utf-8")
    env = {"NOTIFIER_LEDGER": "env.db", "NOTIFIER_SMTP_URL": "smtp://127.0.0.1:9"}
    assert load_settings(path, env=env).ledger == Path("env.db")
    assert load_settings(path, env=env).smtp_url == "smtp://127.0.0.1:9"
    assert load_settings(path, env=env, ledger="flag.db").ledger == Path("flag.db")


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notifier.toml"
    path.write_text("[smtp\nurl = 1", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert str(path) in str(caught.value)
    assert "TOML" in str(caught.value)


def test_bad_rate_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "notifier.toml"
    path.write_text('[smtp]\nrate = "fast"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert caught.value.field == "smtp.rate"


def test_named_but_missing_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})

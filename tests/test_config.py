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


def test_settings_are_read_beside_the_ledger_not_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case, here = tmp_path / "case", tmp_path / "here"
    for folder in (case, here):
        folder.mkdir()
    (case / "notifier.toml").write_text('[smtp]\nurl = "smtp://beside.example:25"\n')
    (here / "notifier.toml").write_text('[smtp]\nurl = "smtp://here.example:25"\n')
    monkeypatch.chdir(here)
    beside = load_settings(env={}, ledger=case / "notifier.db")
    assert beside.smtp_url == "smtp://beside.example:25"
    assert beside.source == case / "notifier.toml"
    from_env = load_settings(env={"NOTIFIER_LEDGER": str(case / "notifier.db")})
    assert from_env.smtp_url == "smtp://beside.example:25"
    assert load_settings(env={}).smtp_url == "smtp://here.example:25"  # ./notifier.db's own


def test_settings_beside_a_ledger_cannot_send_the_run_to_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notifier.toml").write_text('ledger = "elsewhere/x.db"\n')
    with pytest.raises(ConfigError, match="name another ledger") as caught:
        load_settings(env={})
    assert caught.value.field == "ledger" and "--config" in (caught.value.hint or "")
    (tmp_path / "notifier.toml").write_text('ledger = "notifier.db"\n')  # itself: fine
    assert load_settings(env={}).ledger == tmp_path / "notifier.db"
    # Named on purpose, a settings file may name its ledger, relative to itself.
    assert load_settings(tmp_path / "notifier.toml", env={}).ledger == tmp_path / "notifier.db"

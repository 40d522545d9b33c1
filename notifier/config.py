"""Settings, with one precedence order: command-line flag > environment > notifier.toml > default.

Settings belong to the ledger: `notifier.toml` is read from the folder of the ledger file
(the real file, whatever name or symlink reached it), never from the current folder, so
every command run against one ledger, from any folder, sends with the same sender and
contact point. `--config FILE` / NOTIFIER_CONFIG name another file instead. Relative paths
inside a settings file (key files, CA files, the ledger it names) are relative to that
file's folder.

It lets an organisation set its own sender, reply addresses and SMTP target without
editing the shipped campaign files:

    ledger = "notifier.db"

    [smtp]
    url = "smtp://127.0.0.1:8025"
    rate = 50            # messages per second; 0 = no limit
    ca_file = "relay-ca.pem"   # also trust these CAs for the server's certificate

    [imap]
    ca_file = "mail-ca.pem"    # the same, for `bounces ingest --imap`

    [bounces]                  # limits on one report; a report over them is skipped
    max_bytes = 10485760       # (recorded as unparseable), the rest are still read
    folder = "bounces"         # the Maildir or mbox the console's Bounces page reads
                               # (NOTIFIER_BOUNCE_FOLDER; relative to this file's folder)
    max_depth = 32             # MIME parts inside parts
    max_parts = 500            # MIME parts, and recipient blocks in its delivery status

    [send]
    require_approval = false   # only to turn off four-eyes approval (`notifier approve`)

    [sender]
    from = "Data Protection Officer <dpo@example.org>"
    reply_to.en = "volunteers@example.org"
    reply_to.ja = "volunteers-ja@example.org"

    [contact]            # the contact point every notice gives (UK GDPR Art. 34, APPI)
    organisation = "HMR"
    name = "Data Protection Officer"          # a person or a role
    email = "dpo@example.org"
    postal_address = "1 Example Street\nLondon XX1 1XX\nUnited Kingdom"   # or a list of lines
    phone = "+44 20 7946 0123"                # optional

    [contact.ja]         # optional: any of the keys above, for Japanese notices
    name = "データ保護責任者"
    email = "volunteers@example.jp"

    [organisation]       # what the organisation itself states (notifier.organisation)
    never_asks_for = ["password", "payment"]

`notifier check` refuses a campaign while no [contact] is configured. The contact's name
and organisation are also the From display name, per locale (see Contact.from_name).

SMTP credentials never live here: they come from NOTIFIER_SMTP_USER / NOTIFIER_SMTP_PASSWORD
(and the IMAP password from NOTIFIER_IMAP_PASSWORD).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from notifier.errors import ConfigError
from notifier.locales import LOCALES, locale_spec
from notifier.organisation import Organisation, load_organisation

CONFIG_FILE = "notifier.toml"
# Secrets come from the environment only: never flags (seen in `ps`), files or the ledger.
USER_ENV = "NOTIFIER_SMTP_USER"
PASSWORD_ENV = "NOTIFIER_SMTP_PASSWORD"  # noqa: S105 (the variable's name, not a secret)
IMAP_PASSWORD_ENV = "NOTIFIER_IMAP_PASSWORD"  # noqa: S105 (the name, not a password)
DEFAULT_SMTP_URL = "smtp://127.0.0.1:8025"


CONTACT_KEYS: tuple[str, ...] = ("organisation", "name", "email", "postal_address", "phone")
CONTACT_REQUIRED: tuple[str, ...] = ("organisation", "name", "email", "postal_address")


@dataclass(frozen=True)
class Contact:
    """The contact point a notice gives, in one locale: who to write to, and how."""

    organisation: str
    name: str  # a person or a role ("Data Protection Officer")
    email: str
    postal_address: tuple[str, ...]  # one line each
    phone: str = ""

    def from_name(self, locale: str) -> str:
        """The From display name: "Data Protection Officer, HMR"; 「HMR データ保護責任者」."""
        return locale_spec(locale).from_name.format(name=self.name, organisation=self.organisation)


@dataclass(frozen=True)
class ReportLimits:
    """How big and how complex one bounce report may be before it is skipped, unread.

    A delivery report is a few kilobytes, three or four parts deep; the returned copy of
    one of our notices adds tens of kilobytes. The defaults leave room for large returned
    messages and forwarded reports, and stop well before a crafted one costs minutes or
    exceeds what the parser can follow (it recurses once per level).
    """

    max_bytes: int = 10 * 1024 * 1024
    max_depth: int = 32
    max_parts: int = 500


# The largest roster file read: generous (a million rows is ~150 MB), but it stops a
# device or a wrong file from filling memory.
ROSTER_MAX_BYTES = 500 * 1024 * 1024
ROSTER_MAX_BYTES_ENV = "NOTIFIER_ROSTER_MAX_BYTES"
BOUNCE_FOLDER_ENV = "NOTIFIER_BOUNCE_FOLDER"
# An import reads, checks, compares and writes this many rows at a time (all in one
# transaction), so its memory does not grow with the file.
ROSTER_CHUNK_ROWS = 5000

# [bounces] key -> environment variable overriding it.
_LIMIT_ENV: dict[str, str] = {
    "max_bytes": "NOTIFIER_BOUNCE_MAX_BYTES",
    "max_depth": "NOTIFIER_BOUNCE_MAX_DEPTH",
    "max_parts": "NOTIFIER_BOUNCE_MAX_PARTS",
}


@dataclass(frozen=True)
class Settings:
    ledger: Path = Path("notifier.db")
    smtp_url: str = DEFAULT_SMTP_URL
    rate: float = 0.0
    smtp_ca_file: Path | None = None  # PEM CAs to trust besides the system's (a private relay)
    imap_ca_file: Path | None = None  # the same for the IMAP server `bounces ingest` reads
    sender_from: str | None = None
    reply_to: Mapping[str, str] = field(default_factory=dict)
    secret_file: Path | None = None
    dkim_selector: str | None = None
    dkim_key_file: Path | None = None
    bounce_limits: ReportLimits = field(default_factory=ReportLimits)
    # The Maildir or mbox where bounces arrive, that the console ingests ([bounces] folder).
    bounce_folder: Path | None = None
    # A roster bigger than this is refused unread ([roster] max_bytes).
    roster_max_bytes: int = ROSTER_MAX_BYTES
    source: Path | None = None  # the config file these came from, if any
    # The contact point per locale ([contact], with [contact.<locale>] applied); empty
    # when notifier.toml has no [contact].
    contact: Mapping[str, Contact] = field(default_factory=dict)
    # Four eyes: `send --yes` and `resend --yes` need a current `notifier approve`. Turned
    # off only explicitly, by `[send] require_approval = false`.
    require_approval: bool = True
    # The organisation's time zone: every time shown to people is in it, labelled
    # (notifier.times); JSON and CSV keep UTC.
    time_zone: str = "UTC"
    # What the organisation itself states in its notices ([organisation]).
    organisation: Organisation = field(default_factory=Organisation)
    # `notifier demo`: the shipped example's stand-ins (example.org, a drama phone number)
    # are allowed in checks and approvals; messages carrying them still go nowhere but
    # notifier's own sink (notifier.service). Never read from a file.
    demo: bool = False


def load_settings(
    config_path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    ledger: str | Path | None = None,
) -> Settings:
    """Read settings from the settings file and environment; `ledger` is the flag value.

    Without `config_path` (--config) or NOTIFIER_CONFIG, the settings file is the one
    beside the ledger file (see the module docstring); such a file may not name another
    ledger.
    """
    env = os.environ if env is None else env
    chosen = config_path or env.get("NOTIFIER_CONFIG")
    named_ledger = ledger or env.get("NOTIFIER_LEDGER")
    if chosen:
        path = Path(chosen)
        if not path.exists():
            raise ConfigError("config file not found", file=path)
    else:
        path = settings_beside(Path(named_ledger or DEFAULT_LEDGER))
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"not valid TOML: {exc}",
                file=path,
                hint="fix the syntax, or remove the file to use the defaults",
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read the settings ({exc.strerror})", file=path) from exc
    folder = path.parent

    def beside(value: str) -> Path:
        """A path written in the settings file: relative to its folder."""
        return folder / Path(value).expanduser()

    smtp = _table(data, "smtp", path)
    sender = _table(data, "sender", path)
    dkim = _table(data, "dkim", path)
    reply_to = sender.get("reply_to", {})
    if not isinstance(reply_to, dict):
        raise ConfigError(
            "expected a table of locale = address", file=path, field="sender.reply_to"
        )

    ledger_path = Path(named_ledger) if named_ledger else _ledger_from_file(data, path, chosen)
    rate = env.get("NOTIFIER_RATE", smtp.get("rate", 0))
    try:
        rate_value = float(rate)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"expected a number, got {rate!r}", file=path, field="smtp.rate") from exc
    secret = _path_setting(env.get("NOTIFIER_SECRET_FILE"), data.get("secret_file"), beside)
    key_file = _path_setting(None, dkim.get("key_file"), beside)
    ca_file = env.get("NOTIFIER_SMTP_CA_FILE") or smtp.get("ca_file")
    if ca_file is not None and not isinstance(ca_file, str):
        raise ConfigError("expected the path of a PEM file", file=path, field="smtp.ca_file")
    imap_ca = env.get("NOTIFIER_IMAP_CA_FILE") or _table(data, "imap", path).get("ca_file")
    if imap_ca is not None and not isinstance(imap_ca, str):
        raise ConfigError("expected the path of a PEM file", file=path, field="imap.ca_file")
    return Settings(
        ledger=ledger_path,
        smtp_url=str(env.get("NOTIFIER_SMTP_URL") or smtp.get("url") or DEFAULT_SMTP_URL),
        rate=rate_value,
        smtp_ca_file=_path_setting(env.get("NOTIFIER_SMTP_CA_FILE"), smtp.get("ca_file"), beside),
        imap_ca_file=_path_setting(
            env.get("NOTIFIER_IMAP_CA_FILE"), _table(data, "imap", path).get("ca_file"), beside
        ),
        sender_from=sender.get("from"),
        reply_to={str(k): str(v) for k, v in reply_to.items()},
        secret_file=secret,
        dkim_selector=dkim.get("selector"),
        dkim_key_file=key_file,
        bounce_limits=_report_limits(_table(data, "bounces", path), env, path),
        bounce_folder=_bounce_folder(_table(data, "bounces", path), env, path, beside),
        roster_max_bytes=_roster_max_bytes(_table(data, "roster", path), env, path),
        source=path if path.exists() else None,
        contact=load_contact(data, path),
        organisation=load_organisation(data, path),
        require_approval=_require_approval(_table(data, "send", path), path),
        time_zone=_time_zone(env.get("NOTIFIER_TIME_ZONE"), data, path),
    )


DEFAULT_LEDGER = "notifier.db"


def settings_beside(ledger: Path) -> Path:
    """The settings file that belongs to a ledger: notifier.toml in the folder of the real
    ledger file (a symlink's target's folder)."""
    return ledger.resolve().parent / CONFIG_FILE


def _ledger_from_file(data: Mapping[str, Any], path: Path, chosen: object) -> Path:
    """The ledger a settings file names (relative to its folder), or the default."""
    value = data.get("ledger")
    if value is None:
        return Path(DEFAULT_LEDGER)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("expected the path of the ledger file", file=path, field="ledger")
    named = path.parent / Path(value).expanduser()
    if not chosen and named.resolve() != Path(DEFAULT_LEDGER).resolve():
        # Found beside ./notifier.db: it belongs to that ledger, and may not send the run
        # to another one (whose own settings would then be the ones that count).
        raise ConfigError(
            f"the settings beside the ledger name another ledger ({value!r})",
            file=path,
            field="ledger",
            hint=f"remove `ledger` from it, or use it on purpose: notifier --config {path} ...",
        )
    return named


def _path_setting(from_env: str | None, from_file: object, beside: Any) -> Path | None:
    """A path setting: the environment's as given (relative to where the command runs),
    else the settings file's, relative to that file's folder."""
    if from_env:
        return Path(from_env)
    if isinstance(from_file, str) and from_file:
        return Path(beside(from_file))
    return None


def _require_approval(send: Mapping[str, Any], path: Path) -> bool:
    value = send.get("require_approval", True)
    if not isinstance(value, bool):
        raise ConfigError(
            f"expected true or false, got {value!r}",
            file=path,
            field="send.require_approval",
            hint="leave it out (approval required), or write require_approval = false",
        )
    return value


def _time_zone(from_env: str | None, data: dict[str, Any], path: Path) -> str:
    """The one zone every time shown to people is in (notifier.times): NOTIFIER_TIME_ZONE,
    else `[display] time_zone` (or its older name, `[report] time_zone`), checked: an IANA
    name such as Europe/London or Asia/Tokyo; UTC when unset."""
    display = _table(data, "display", path).get("time_zone")
    report = _table(data, "report", path).get("time_zone")
    if display is not None and report is not None and display != report:
        raise ConfigError(
            f"two time zones: [display] time_zone = {display!r}, [report] time_zone = {report!r}",
            file=path,
            field="display.time_zone",
            hint="keep one: [display] time_zone is used for every time notifier shows",
        )
    if from_env:
        value: object = from_env
        field_name = "NOTIFIER_TIME_ZONE"
    else:
        value = display if display is not None else report
        field_name = "display.time_zone" if display is not None else "report.time_zone"
    if value is None or value == "":
        return "UTC"
    if not isinstance(value, str):
        raise ConfigError("expected a time zone name", file=path, field=field_name)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown time zone {value!r}",
            file=path,
            field=field_name,
            hint="use an IANA name such as Europe/London or Asia/Tokyo",
        ) from exc
    return value


def load_contact(data: Mapping[str, Any], path: Path) -> dict[str, Contact]:
    """The contact point per locale from a settings file's [contact] table ({} if none)."""
    if "contact" not in data:
        return {}
    table = _table(dict(data), "contact", path)
    overrides: dict[str, dict[str, Any]] = {}
    base: dict[str, Any] = {}
    for key, value in table.items():
        if key in LOCALES and isinstance(value, dict):
            overrides[key] = value
        elif key in CONTACT_KEYS:
            base[key] = value
        else:
            raise ConfigError(
                f"unknown key {key!r}",
                file=path,
                field=f"contact.{key}",
                hint=f"[contact] has {', '.join(CONTACT_KEYS)} (phone is optional), and "
                f"[contact.<locale>] tables ({', '.join(LOCALES)}) overriding any of them",
            )
    for key in CONTACT_REQUIRED:
        if key not in base:
            raise ConfigError(
                "missing key",
                file=path,
                field=f"contact.{key}",
                hint=_CONTACT_HINTS[key],
            )
    contacts: dict[str, Contact] = {}
    for locale in LOCALES:
        override = overrides.get(locale, {})
        unknown = sorted(set(override) - set(CONTACT_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown key {unknown[0]!r}",
                file=path,
                field=f"contact.{locale}.{unknown[0]}",
                hint=f"[contact.{locale}] overrides any of: {', '.join(CONTACT_KEYS)}",
            )
        merged = {**base, **override}
        where = {k: f"contact.{locale}.{k}" if k in override else f"contact.{k}" for k in merged}
        contacts[locale] = Contact(
            organisation=_contact_text(merged, "organisation", where, path),
            name=_contact_text(merged, "name", where, path),
            email=_contact_email(merged, where, path),
            postal_address=_contact_lines(merged, where, path),
            phone=_contact_text(merged, "phone", where, path) if "phone" in merged else "",
        )
    return contacts


_CONTACT_HINTS = {
    "organisation": 'the organisation\'s name as readers know it, e.g. organisation = "HMR"',
    "name": 'a person or a role, e.g. name = "Data Protection Officer"',
    "email": 'where people write to, e.g. email = "dpo@example.org"',
    "postal_address": 'e.g. postal_address = ["1 Example Street", "London XX1 1XX"]',
    "phone": 'e.g. phone = "+44 20 7946 0123" (optional)',
}


def _contact_text(merged: Mapping[str, Any], key: str, where: Mapping[str, str], path: Path) -> str:
    value = merged[key]
    if not isinstance(value, str) or not value.strip() or "\n" in value.strip():
        raise ConfigError(
            f"expected a one-line, non-empty string, got {value!r}",
            file=path,
            field=where[key],
            hint=_CONTACT_HINTS[key],
        )
    return " ".join(value.split())


def _contact_email(merged: Mapping[str, Any], where: Mapping[str, str], path: Path) -> str:
    email = _contact_text(merged, "email", where, path)
    local, _, domain = email.rpartition("@")
    if not local or "." not in domain or " " in email or "<" in email:
        raise ConfigError(
            f"expected a bare e-mail address, got {email!r}",
            file=path,
            field=where["email"],
            hint=_CONTACT_HINTS["email"],
        )
    return email


def _contact_lines(
    merged: Mapping[str, Any], where: Mapping[str, str], path: Path
) -> tuple[str, ...]:
    value = merged["postal_address"]
    if isinstance(value, str):
        value = value.splitlines()
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        lines = tuple(" ".join(line.split()) for line in value if line.strip())
        if lines:
            return lines
    raise ConfigError(
        f"expected the address as a string (lines separated by \\n) or a list of lines, "
        f"got {value!r}",
        file=path,
        field=where["postal_address"],
        hint=_CONTACT_HINTS["postal_address"],
    )


def _table(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"expected a [{key}] table", file=path, field=key)
    return value


def _report_limits(table: dict[str, Any], env: Mapping[str, str], path: Path) -> ReportLimits:
    """[bounces] max_bytes / max_depth / max_parts, each overridable from the environment."""
    values: dict[str, int] = {}
    for key, var in _LIMIT_ENV.items():
        raw = env.get(var, table.get(key))
        if raw is None:
            continue
        where = var if var in env else f"bounces.{key}"
        try:
            number = int(raw)
        except (TypeError, ValueError):
            number = 0
        if isinstance(raw, bool | float) or number < 1:
            raise ConfigError(
                f"expected a whole number above 0, got {raw!r}",
                file=None if var in env else path,
                field=where,
                hint="remove it to use the default",
            )
        values[key] = number
    return ReportLimits(**values)


def _bounce_folder(
    table: dict[str, Any], env: Mapping[str, str], path: Path, beside: Any
) -> Path | None:
    """[bounces] folder (relative to the settings file), or NOTIFIER_BOUNCE_FOLDER."""
    value = table.get("folder")
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(
            "expected the path of a Maildir folder or an mbox file",
            file=path,
            field="bounces.folder",
            hint="remove it, or name the folder where bounces arrive",
        )
    return _path_setting(env.get(BOUNCE_FOLDER_ENV), value, beside)


def _roster_max_bytes(table: dict[str, Any], env: Mapping[str, str], path: Path) -> int:
    """[roster] max_bytes, or NOTIFIER_ROSTER_MAX_BYTES."""
    raw = env.get(ROSTER_MAX_BYTES_ENV, table.get("max_bytes", ROSTER_MAX_BYTES))
    try:
        number = int(raw)
    except (TypeError, ValueError):
        number = 0
    if isinstance(raw, bool | float) or number < 1:
        in_env = ROSTER_MAX_BYTES_ENV in env
        raise ConfigError(
            f"expected a whole number of bytes above 0, got {raw!r}",
            file=None if in_env else path,
            field=ROSTER_MAX_BYTES_ENV if in_env else "roster.max_bytes",
            hint="remove it to use the default (500 MB)",
        )
    return number


@dataclass(frozen=True)
class Credentials:
    """SMTP AUTH credentials; the password never appears in a repr or a log."""

    user: str
    password: str = field(repr=False)


def credentials_from_env(env: Mapping[str, str] | None = None) -> Credentials | None:
    """SMTP AUTH credentials, from the environment only (never flags, files or the ledger)."""
    env = os.environ if env is None else env
    user = env.get(USER_ENV)
    if not user:
        return None
    return Credentials(user, env.get(PASSWORD_ENV, ""))


def imap_password(env: Mapping[str, str] | None = None) -> str | None:
    """The IMAP password for `bounces ingest --imap`, from the environment only."""
    env = os.environ if env is None else env
    return env.get(IMAP_PASSWORD_ENV) or None

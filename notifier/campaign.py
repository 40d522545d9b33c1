"""Campaigns: one notice to one audience, defined by a TOML file in notifier/campaigns/.

A campaign file looks like this (every key but `follows`, `allow_links`, `dates`,
`facts`, `templates_dir` and `locale_dir` is required):

    id = "2020-04-29-update"
    title = "Update of 29 April 2020: the volunteer database was not accessed"
    template = "breach_update"        # templates/<locale>/breach_update.txt and .html
    date = 2020-04-29                 # the date of the notice, shown in it
    from = "HMR Data Protection <dpo@example.org>"
    follows = "2020-03-breach"        # a follow-up: threaded under, and sent after, that one
    allow_links = false               # `notifier check` refuses links and URLs unless true

    [reply_to]                        # one per locale the audience can have
    en = "HMR Volunteers <volunteers@example.org>"
    ja = "HMR ボランティア窓口 <volunteers@example.jp>"

    [subject]
    en = "..."
    ja = "..."

    [dates]                           # named dates the templates show, through Babel
    attack = 2020-03-14

    [facts]                           # facts of the breach the notices state
    published_surname_initials = ["D", "G", "I", "J"]   # whose records were published

    [audience]                        # empty or absent: no filter on that attribute
    exposures = ["published", "screened", "database_only"]
    locales = ["en", "ja"]
    follows_states = ["sent", "delivered"]   # a follow-up: outcomes of the earlier notice

`templates_dir` and `locale_dir` (paths relative to the campaign file) point a campaign
at another set of templates or Babel catalogs than the shipped ones: for trying out a
new wording, and for tests. From and Reply-To can be overridden without editing the
file, in notifier.toml ([sender] from, reply_to.<locale>): see `apply_overrides`. The
contact point every notice gives comes from notifier.toml's [contact] only (never from a
campaign file, so an organisation cannot send the example one by accident); it also gives
the From display name per locale (`Campaign.sender_for`).

This module reads and checks the file; who is in the audience it declares, person by
person, is decided in `notifier.audience`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from notifier.catalogs import LOCALE_DIR
from notifier.config import Contact, Settings
from notifier.errors import CampaignError, UnknownCampaign
from notifier.message import REACHED_STATES, MessageState
from notifier.organisation import Organisation
from notifier.volunteer import EXPOSURES, LOCALES

PACKAGE_DIR = Path(__file__).resolve().parent
CAMPAIGN_DIR = PACKAGE_DIR / "campaigns"
TEMPLATES_DIR = PACKAGE_DIR / "templates"

# A follow-up with no `follows_states` goes to people whose earlier notice was sent or
# delivered, and to people whose earlier notice expired in a mail system's queue (a server
# was down; the address is fine): a hard bounce or a refusal means the person cannot be
# reached by e-mail at all. The follow-up's wording knows which readers it did not reach
# (Renderer.render's `reached`).
DEFAULT_FOLLOWS_STATES: tuple[str, ...] = (*REACHED_STATES, MessageState.EXPIRED)

_REQUIRED_KEYS = ("id", "title", "template", "date", "from", "reply_to", "subject")
_OPTIONAL_KEYS = (
    "follows",
    "allow_links",
    "dates",
    "facts",
    "audience",
    "templates_dir",
    "locale_dir",
)
_AUDIENCE_KEYS = ("exposures", "locales", "follows_states")
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Audience:
    """Who a campaign goes to. Empty tuples mean "no filter on this attribute"."""

    exposures: tuple[str, ...] = ()
    locales: tuple[str, ...] = ()
    # For a follow-up: which states of the followed campaign's message qualify a person.
    follows_states: tuple[str, ...] = ()


@dataclass(frozen=True)
class Facts:
    """Facts of the breach a campaign's notices state, which `notifier check` holds the
    roster to. Empty: the campaign states none (its templates cannot use them)."""

    # The initials of the surnames whose records were published (the 2020 notice: "some
    # of our volunteers with surnames beginning with D, G, I or J"): every `published`
    # volunteer's family name must begin with one.
    published_surname_initials: tuple[str, ...] = ()


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    title: str
    template: str  # base name: templates/<locale>/<template>.txt and .html
    notice_date: date
    sender: str  # the From header, e.g. "HMR Data Protection <dpo@example.org>"
    reply_to: Mapping[str, str]  # locale -> address
    subject: Mapping[str, str]  # locale -> subject line
    audience: Audience = field(default_factory=Audience)
    follows: str | None = None
    allow_links: bool = False
    path: Path | None = None
    # Named dates the templates show (the attack, the publication), formatted by Babel.
    dates: Mapping[str, date] = field(default_factory=dict)
    facts: Facts = field(default_factory=Facts)
    templates_dir: Path = TEMPLATES_DIR  # holds <locale>/<template>.txt and .html
    locale_dir: Path = LOCALE_DIR  # holds <locale>/LC_MESSAGES/messages.po
    # The contact point per locale, from notifier.toml's [contact] (see apply_overrides).
    contact: Mapping[str, Contact] = field(default_factory=dict)
    # What the organisation itself states, from notifier.toml's [organisation].
    organisation: Organisation = field(default_factory=Organisation)
    # notifier.toml's [sender] from names its own display name: used for every locale,
    # never replaced by the one made from [contact] (see apply_overrides).
    sender_name_given: bool = False

    @property
    def locales(self) -> tuple[str, ...]:
        """The locales this campaign can be sent in."""
        return self.audience.locales or LOCALES

    def sender_for(self, locale: str) -> str:
        """The From header for a reader in `locale`: the contact point's name and
        organisation in that locale's words, at the sender's address."""
        contact = self.contact.get(locale)
        if contact is None or self.sender_name_given:
            return self.sender
        return _with_display_name(self.sender, contact.from_name(locale))


# --- loading ------------------------------------------------------------------------


def load_campaign(id_or_path: str | Path) -> Campaign:
    """The campaign with this id (in CAMPAIGN_DIR), or the one in this file."""
    path = _campaign_path(id_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CampaignError(f"cannot read the campaign file ({exc.strerror})", file=path) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CampaignError(
            f"not valid TOML: {exc}", file=path, hint="fix the syntax; see notifier/campaign.py"
        ) from exc
    return _parse_campaign(data, path)


def list_campaigns(directory: Path = CAMPAIGN_DIR) -> list[Campaign]:
    """Every campaign in `directory`, oldest notice first."""
    campaigns = [load_campaign(p) for p in sorted(directory.glob("*.toml"))]
    return sorted(campaigns, key=lambda c: (c.notice_date, c.campaign_id))


def apply_overrides(campaign: Campaign, settings: Settings) -> Campaign:
    """The campaign with From, Reply-To, the contact point and the organisation's own
    statements from notifier.toml.

    The From display name: the one `[sender] from` gives, when it gives one ("HMR Data
    Protection <dpo@...>"), for every locale, as configured. Otherwise, with a [contact],
    each locale's is made from the contact point (`sender_for(locale)`; `sender` carries
    the English one). The campaign file's own display name gives way to either.
    """
    reply_to = {**campaign.reply_to, **settings.reply_to}
    contact = settings.contact or campaign.contact
    sender = settings.sender_from or campaign.sender
    name_given = bool(settings.sender_from and parseaddr(settings.sender_from)[0])
    if contact and not name_given:
        english = contact.get("en") or next(iter(contact.values()))
        sender = _with_display_name(sender, english.from_name("en"))
    return dataclasses.replace(
        campaign,
        sender=sender,
        sender_name_given=name_given,
        reply_to=reply_to,
        contact=dict(contact),
        organisation=settings.organisation,
    )


def _with_display_name(mailbox: str, name: str) -> str:
    """`mailbox` ("Name <addr>" or "addr") with another display name, quoted as needed."""
    address = parseaddr(mailbox)[1]
    if not address or "@" not in address:
        return mailbox  # compose reports a malformed From with the campaign's own words
    local, _, domain = address.rpartition("@")
    try:
        return str(Address(display_name=name, username=local, domain=domain))
    except ValueError:
        return mailbox


def _campaign_path(id_or_path: str | Path) -> Path:
    text = str(id_or_path)
    looks_like_path = (
        isinstance(id_or_path, Path) or text.endswith(".toml") or "/" in text or "\\" in text
    )
    if looks_like_path:
        path = Path(id_or_path)
        if not path.is_file():
            raise CampaignError("campaign file not found", file=path)
        return path
    found = _find_campaign_file(text, (CAMPAIGN_DIR,))
    if found is None:
        raise unknown_campaign(text)
    return found


def unknown_campaign(campaign_id: str, registered: Iterable[str] = ()) -> UnknownCampaign:
    """The error for a campaign id that names nothing: with the closest known ids (the
    shipped campaigns and those the ledger has), so a typo is caught, not obeyed."""
    known = sorted({*known_campaign_ids(), *registered})
    close = difflib.get_close_matches(campaign_id, known, n=3, cutoff=0.6)
    return UnknownCampaign(
        f"no campaign with id {campaign_id!r}"
        + (f"; did you mean {' or '.join(close)}?" if close else ""),
        hint="list them with: notifier campaign list (or give the path of a .toml file)",
    )


def require_known_campaign(campaign_id: str, registered: Collection[str]) -> None:
    """Stop (exit 2, with the closest ids) unless `campaign_id` is a shipped campaign or
    one the ledger has: for commands that read only the ledger (status, report)."""
    if campaign_id in registered or campaign_id in known_campaign_ids():
        return
    raise unknown_campaign(campaign_id, registered)


def known_campaign_ids(directory: Path = CAMPAIGN_DIR) -> list[str]:
    """The id of every campaign file in `directory` (its `id`, else its file name)."""
    ids = []
    for candidate in sorted(directory.glob("*.toml")):
        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            data = {}
        ids.append(str(data.get("id") or candidate.stem))
    return ids


def _find_campaign_file(campaign_id: str, directories: tuple[Path, ...]) -> Path | None:
    """The file defining `campaign_id`: `<id>.toml`, or any file whose `id` says so."""
    for directory in directories:
        candidate = directory / f"{campaign_id}.toml"
        if candidate.is_file():
            return candidate
    for directory in directories:
        for candidate in sorted(directory.glob("*.toml")):
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
                continue  # a broken neighbour is reported when it is itself loaded
            if data.get("id") == campaign_id:
                return candidate
    return None


# --- validation ---------------------------------------------------------------------


def _parse_campaign(data: dict[str, Any], path: Path) -> Campaign:
    unknown = sorted(set(data) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if "attachments" in unknown:
        raise CampaignError(
            "attachments are not supported: a breach notice carries none",
            file=path,
            field="attachments",
            hint="remove the key; say in the text where people can ask for documents",
        )
    if unknown:
        raise CampaignError(
            f"unknown key {unknown[0]!r}",
            file=path,
            field=unknown[0],
            hint=f"a campaign file has: {', '.join(_REQUIRED_KEYS + _OPTIONAL_KEYS)}",
        )
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise CampaignError(
                "missing key", file=path, field=key, hint=_EXPECTED.get(key, "see campaign.py")
            )
    campaign_id = _string(data, "id", path)
    if not _ID_PATTERN.fullmatch(campaign_id):
        raise CampaignError(
            f"expected an id of letters, digits, '.', '_' and '-', got {campaign_id!r}",
            file=path,
            field="id",
        )
    audience = _parse_audience(data.get("audience", {}), path)
    follows = _optional_string(data, "follows", path)
    if audience.follows_states and not follows:
        raise CampaignError(
            "follows_states needs a campaign to follow",
            file=path,
            field="audience.follows_states",
            hint='add follows = "<campaign id>", or remove follows_states',
        )
    if follows:
        _check_follows(follows, campaign_id, path)
        if not audience.follows_states:
            audience = dataclasses.replace(audience, follows_states=DEFAULT_FOLLOWS_STATES)
    locales = audience.locales or LOCALES
    allow_links = data.get("allow_links", False)
    if not isinstance(allow_links, bool):
        raise CampaignError(
            f"expected true or false, got {allow_links!r}", file=path, field="allow_links"
        )
    campaign = Campaign(
        campaign_id=campaign_id,
        title=_string(data, "title", path),
        template=_string(data, "template", path),
        notice_date=_date(data["date"], path, "date"),
        sender=_string(data, "from", path),
        reply_to=_per_locale(data, "reply_to", locales, path),
        subject=_per_locale(data, "subject", locales, path),
        audience=audience,
        follows=follows,
        allow_links=allow_links,
        path=path,
        dates=_dates(data.get("dates", {}), path),
        facts=_facts(data.get("facts", {}), path),
        templates_dir=_directory(data, "templates_dir", TEMPLATES_DIR, path),
        locale_dir=_directory(data, "locale_dir", LOCALE_DIR, path),
    )
    _check_templates(campaign, path)
    return campaign


_EXPECTED = {
    "id": 'a short name, e.g. id = "2020-03-breach"',
    "title": "a one-line description for people choosing a campaign",
    "template": 'the template base name, e.g. template = "breach" (templates/<locale>/breach.txt)',
    "date": "the date of the notice, e.g. date = 2020-03-24",
    "from": 'the sender, e.g. from = "HMR Data Protection <dpo@example.org>"',
    "reply_to": "a [reply_to] table with one address per locale (en = ..., ja = ...)",
    "subject": "a [subject] table with one subject line per locale (en = ..., ja = ...)",
}


def _string(data: Mapping[str, Any], key: str, path: Path, prefix: str = "") -> str:
    value = data[key]
    if not isinstance(value, str) or not value.strip():
        raise CampaignError(
            f"expected a non-empty string, got {value!r}",
            file=path,
            field=prefix + key,
            hint=_EXPECTED.get(key),
        )
    return value.strip()


def _optional_string(data: Mapping[str, Any], key: str, path: Path) -> str | None:
    return _string(data, key, path) if key in data else None


def _table(value: Any, path: Path, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise CampaignError(
            f"expected a table [{key}], got {value!r}",
            file=path,
            field=key,
            hint=_EXPECTED.get(key),
        )
    return value


def _date(value: Any, path: Path, key: str) -> date:
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            pass
    # A TOML datetime is also a date in Python: refuse it, a notice has a day, not a time.
    if isinstance(value, dt.datetime) or not isinstance(value, date):
        raise CampaignError(
            f"expected a date like 2020-03-24, got {value!r}",
            file=path,
            field=key,
            hint=_EXPECTED.get(key, "write dates as YYYY-MM-DD, without quotes"),
        )
    return value


def _dates(value: Any, path: Path) -> dict[str, date]:
    table = _table(value, path, "dates")
    return {str(name): _date(v, path, f"dates.{name}") for name, v in table.items()}


_INITIAL = re.compile(r"[A-Z]")


def _facts(value: Any, path: Path) -> Facts:
    table = _table(value, path, "facts")
    unknown = sorted(set(table) - {"published_surname_initials"})
    if unknown:
        raise CampaignError(
            f"unknown key {unknown[0]!r}",
            file=path,
            field=f"facts.{unknown[0]}",
            hint="[facts] has: published_surname_initials",
        )
    initials = table.get("published_surname_initials", [])
    if not isinstance(initials, list) or not all(
        isinstance(i, str) and _INITIAL.fullmatch(i) for i in initials
    ):
        raise CampaignError(
            f"expected a list of capital letters, got {initials!r}",
            file=path,
            field="facts.published_surname_initials",
            hint='e.g. published_surname_initials = ["D", "G", "I", "J"]',
        )
    return Facts(published_surname_initials=tuple(dict.fromkeys(initials)))


def _directory(data: Mapping[str, Any], key: str, default: Path, path: Path) -> Path:
    if key not in data:
        return default
    directory = (path.parent / _string(data, key, path)).resolve()
    if not directory.is_dir():
        raise CampaignError(f"no such directory: {directory}", file=path, field=key)
    return directory


def _string_list(
    table: Mapping[str, Any], key: str, allowed: tuple[str, ...], path: Path
) -> tuple[str, ...]:
    value = table.get(key, [])
    where = f"audience.{key}"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CampaignError(f"expected a list of strings, got {value!r}", file=path, field=where)
    for item in value:
        if item not in allowed:
            raise CampaignError(
                f"unknown value {item!r}",
                file=path,
                field=where,
                hint=f"expected one of: {', '.join(allowed)}",
            )
    return tuple(dict.fromkeys(value))


def _parse_audience(value: Any, path: Path) -> Audience:
    table = _table(value, path, "audience")
    unknown = sorted(set(table) - set(_AUDIENCE_KEYS))
    if unknown:
        raise CampaignError(
            f"unknown key {unknown[0]!r}",
            file=path,
            field=f"audience.{unknown[0]}",
            hint=f"[audience] has: {', '.join(_AUDIENCE_KEYS)}",
        )
    return Audience(
        exposures=_string_list(table, "exposures", EXPOSURES, path),
        locales=_string_list(table, "locales", LOCALES, path),
        follows_states=_string_list(table, "follows_states", tuple(MessageState), path),
    )


def _per_locale(
    data: Mapping[str, Any], key: str, locales: tuple[str, ...], path: Path
) -> dict[str, str]:
    table = _table(data[key], path, key)
    result: dict[str, str] = {}
    for locale in table:
        if locale not in LOCALES:
            raise CampaignError(
                f"unknown locale {locale!r}",
                file=path,
                field=f"{key}.{locale}",
                hint=f"expected one of: {', '.join(LOCALES)}",
            )
        result[locale] = _string(table, locale, path, prefix=f"{key}.")
    for locale in locales:
        if locale not in result:
            raise CampaignError(
                "missing key",
                file=path,
                field=f"{key}.{locale}",
                hint=f"the audience includes {locale!r} readers: {_EXPECTED[key]}",
            )
    return result


def _check_follows(follows: str, campaign_id: str, path: Path) -> None:
    if follows == campaign_id:
        raise CampaignError("a campaign cannot follow itself", file=path, field="follows")
    directories = tuple(dict.fromkeys((path.parent.resolve(), CAMPAIGN_DIR)))
    if _find_campaign_file(follows, directories) is None:
        raise CampaignError(
            f"follows an unknown campaign {follows!r}",
            file=path,
            field="follows",
            hint="give the id of a campaign beside this file or in notifier/campaigns",
        )


def load_followed(campaign: Campaign) -> Campaign | None:
    """The campaign `campaign` follows (beside its file, or shipped), with the same
    settings applied (contact, From, Reply-To); None for a first notice."""
    if not campaign.follows:
        return None
    base = campaign.path.parent.resolve() if campaign.path else CAMPAIGN_DIR
    found = _find_campaign_file(campaign.follows, tuple(dict.fromkeys((base, CAMPAIGN_DIR))))
    if found is None:
        raise CampaignError(f"follows an unknown campaign {campaign.follows!r}", field="follows")
    followed = load_campaign(found)
    reply_to = {**followed.reply_to, **campaign.reply_to}
    return dataclasses.replace(
        followed,
        reply_to=reply_to,
        contact=campaign.contact,
        organisation=campaign.organisation,
    )


def _check_templates(campaign: Campaign, path: Path) -> None:
    for locale in campaign.locales:
        for suffix in (".txt", ".html"):
            template = campaign.templates_dir / locale / f"{campaign.template}{suffix}"
            if not template.is_file():
                raise CampaignError(
                    f"unknown template {campaign.template!r}: {template} does not exist",
                    file=path,
                    field="template",
                    hint="name a template that exists for every locale, as a .txt and a .html",
                )

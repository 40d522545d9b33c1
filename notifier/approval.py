"""Four-eyes approval: a campaign is sent only as a named person approved it, word for word.

What a person reads before approving (the proof sheet, `notifier check ID --proof`) is
made from the campaign file, its templates and catalogs, and the settings that appear in
messages (From, Reply-To, the contact point). `content_digest` hashes exactly those, and
`notifier approve ID --by NAME` records that hash in the ledger as a chained event. A send
then goes ahead only while the hash of what it would send equals the approved one: a
changed sentence, a new Reply-To or another phone number makes the approval stale, and
the send stops with one line saying what to run.

Test sends (`send --test-to`) go to the operator only and need no approval. Turning the
rule off is an explicit setting: `[send] require_approval = false`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from notifier.campaign import Campaign
from notifier.errors import ApprovalError
from notifier.event import EventKind
from notifier.ledger import Event, EventDraft, Ledger
from notifier.times import shown_time

APPROVED = EventKind.CAMPAIGN_APPROVED


@dataclass(frozen=True)
class ContentDigest:
    """The hash of everything a campaign's messages are made from, and of each part."""

    sha256: str
    parts: dict[str, str]  # campaign_file, templates, catalogs, settings -> sha256


@dataclass(frozen=True)
class Approval:
    """One recorded approval: who, when, and of which content."""

    by: str
    at: str
    sha256: str
    seq: int
    parts: dict[str, str]  # the ContentDigest parts approved, to say what changed since


@dataclass(frozen=True)
class ApprovalStatus:
    """Where a campaign stands: its latest approval, and whether it still holds."""

    approval: Approval | None
    current: ContentDigest

    @property
    def is_current(self) -> bool:
        return self.approval is not None and self.approval.sha256 == self.current.sha256


def _file_sha256(path: Path | None) -> str:
    return hashlib.sha256(path.read_bytes() if path else b"").hexdigest()


def _files_sha256(roots: list[Path]) -> str:
    digest = hashlib.sha256()
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".mo"):
            digest.update(path.relative_to(root.parent).as_posix().encode("utf-8") + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def templates_sha256(campaign: Campaign) -> str:
    """One sha256 over the campaign's templates and catalogs, for every locale it uses.

    Stored when the campaign is first sent, so a report can show which wording went out.
    """
    roots = [campaign.templates_dir / loc for loc in campaign.locales]
    roots += [campaign.locale_dir / loc for loc in campaign.locales]
    return _files_sha256(roots)


def _message_settings(campaign: Campaign) -> dict[str, Any]:
    """The settings that appear in messages, after notifier.toml's overrides."""
    return {
        "from": {loc: campaign.sender_for(loc) for loc in campaign.locales},
        "reply_to": dict(sorted(campaign.reply_to.items())),
        "contact": {loc: asdict(c) for loc, c in sorted(campaign.contact.items())},
        "organisation": campaign.organisation.as_settings(),
    }


def content_digest(campaign: Campaign) -> ContentDigest:
    """The hash of exactly what this campaign's messages are made from.

    `campaign` is the campaign as it will be sent (with notifier.toml's overrides applied).
    """
    settings_json = json.dumps(_message_settings(campaign), sort_keys=True, ensure_ascii=False)
    parts = {
        "campaign_file": _file_sha256(campaign.path),
        "templates": _files_sha256([campaign.templates_dir / loc for loc in campaign.locales]),
        "catalogs": _files_sha256([campaign.locale_dir / loc for loc in campaign.locales]),
        "settings": hashlib.sha256(settings_json.encode("utf-8")).hexdigest(),
    }
    overall = hashlib.sha256(json.dumps(parts, sort_keys=True).encode("ascii")).hexdigest()
    return ContentDigest(overall, parts)


def approve(
    ledger: Ledger, campaign: Campaign, by: str, *, checked: Mapping[str, Any] | None = None
) -> Approval:
    """Record that `by` approved the campaign's current content; `checked`: what the
    campaign's check, which passed just before, was run against (notifier.service)."""
    name = approver_name(by)
    digest = content_digest(campaign)
    (event,) = ledger.record(
        [
            EventDraft(
                APPROVED,
                campaign_id=campaign.campaign_id,
                data={
                    "by": name,
                    "sha256": digest.sha256,
                    "parts": digest.parts,
                    **({"check": dict(checked)} if checked is not None else {}),
                },
            )
        ]
    )
    return _approval_from(event)


# Terminal escape sequences (CSI and OSC): what follows ESC is no part of a name.
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|.)?")


def approver_name(by: str) -> str:
    """The approver's name as recorded: without terminal escapes, control or invisible
    format characters (zero-width spaces, word joiners, byte-order marks, bidi controls),
    spaces collapsed. It must keep at least one visible letter: an approval signed with
    nothing a reader can see signs off nothing (ApprovalError, exit 1)."""
    text = _ESCAPES.sub("", by)
    kept = "".join(c for c in text if unicodedata.category(c) not in _INVISIBLE)
    name = " ".join(kept.split())
    if not any(unicodedata.category(c).startswith("L") for c in name):
        raise ApprovalError(
            "an approval needs the approver's name, with at least one visible letter",
            field="--by",
            hint='--by "Jane Doe, DPO"',
        )
    return name


# Unicode categories that show nothing: controls, format characters (U+200B, U+2060,
# U+FEFF, bidi controls), line and paragraph separators, unassigned and private use.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def approval_status(ledger: Ledger, campaign: Campaign) -> ApprovalStatus:
    """The campaign's latest approval (None if never approved) and its current content."""
    latest = None
    for event in ledger.events(campaign_id=campaign.campaign_id, kinds=[APPROVED]):
        latest = event
    approval = _approval_from(latest) if latest is not None else None
    return ApprovalStatus(approval, content_digest(campaign))


def require_approval(ledger: Ledger, campaign: Campaign, *, zone: str = "UTC") -> Approval:
    """The approval a send goes ahead on, or ApprovalError (exit 1) saying what to run;
    the time of an approval it names is shown in `zone` (notifier.times)."""
    status = approval_status(ledger, campaign)
    cid = campaign.campaign_id
    if status.approval is None:
        raise ApprovalError(
            f"{cid} has not been approved: nothing was sent. Have the person who signs it"
            f" off read the proof sheet (notifier check {cid} --proof proof.html), then"
            f' run: notifier approve {cid} --by "NAME"'
        )
    if not status.is_current:
        approved = status.approval.parts
        changed = [p for p, v in status.current.parts.items() if approved.get(p) != v]
        raise ApprovalError(
            f"{cid} changed since {status.approval.by} approved it at"
            f" {shown_time(status.approval.at, zone)}"
            f" ({', '.join(changed) or 'content'} differ): nothing was sent. Check the new"
            f' proof sheet, then run: notifier approve {cid} --by "NAME"'
        )
    return status.approval


def _approval_from(event: Event) -> Approval:
    parts = event.data.get("parts")
    return Approval(
        by=str(event.data.get("by", "")),
        at=event.at,
        sha256=str(event.data.get("sha256", "")),
        seq=event.seq,
        parts={str(k): str(v) for k, v in parts.items()} if isinstance(parts, dict) else {},
    )

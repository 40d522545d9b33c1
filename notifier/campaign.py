"""Campaigns: one notice to one audience, defined by a TOML file in notifier/campaigns/."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path


@dataclass(frozen=True)
class Audience:
    """Who a campaign goes to. Empty tuples mean "no filter on this attribute"."""

    exposures: tuple[str, ...] = ()
    locales: tuple[str, ...] = ()
    # For a follow-up: which states of the followed campaign's message qualify a person.
    follows_states: tuple[str, ...] = ()


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

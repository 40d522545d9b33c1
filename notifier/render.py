"""Rendering: a campaign and a volunteer -> subject, text and HTML in the volunteer's locale."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderedMessage:
    campaign_id: str
    volunteer_id: str
    locale: str
    subject: str
    text: str
    html: str

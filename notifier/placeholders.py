"""The shipped example's stand-ins, found wherever they would reach a reader.

The example organisation writes from example.org, gives a fictional phone number and a
postcode that cannot exist, so the demo runs end to end without pretending to be anyone.
Left in a real organisation's settings, they would tell a frightened person to call a
number nobody answers. `placeholders(campaign)` finds them in everything a notice shows
of the organisation: From, Reply-To, the contact point in every locale, and the
organisation's own statements. `notifier check` and `approve` refuse them (a problem
naming the field); only messages going into notifier's own sink may carry them (the demo).

What counts as a stand-in:
- a domain reserved for examples: example.com, example.net, example.org (RFC 2606),
  anything under .example, and JPRS's reserved example.jp names (example.jp,
  example.co.jp, example.ne.jp, ...);
- a UK telephone number Ofcom keeps for drama (020 7946 0000 to 0999, 0113 496 0xxx and
  the other 496 ranges, 01632 960xxx, 07700 900xxx, 0808 157 0xxx, ...);
- a postcode of the example's made-up shape, XX1 1XX.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from notifier.campaign import Campaign

_EXAMPLE_DOMAIN = re.compile(
    r"(?:^|[@.\s<(])(?:example\.(?:com|net|org)|(?:[a-z0-9-]+\.)+example"
    r"|example\.(?:co\.|ne\.|or\.|ac\.|ad\.|go\.|gr\.|ed\.|lg\.)?jp)(?=$|[\s>),;])",
    re.IGNORECASE,
)
# Ofcom's numbers for drama, as digits after the leading 0 (a +44 prefix read as 0).
_DRAMA_NUMBERS = re.compile(
    r"^0(?:"
    r"20\s*7946\s*0\d{3}"  # London
    r"|1(?:13|14|15|16|17|18|21|31|41|51|61)\s*496\s*0\d{3}"  # cities
    r"|191\s*498\s*0\d{3}"  # Tyneside
    r"|28\s*9649\s*6\d{3}"  # Northern Ireland
    r"|29\s*2018\s*0\d{3}"  # Cardiff
    r"|1632\s*960\s*\d{3}"  # no area
    r"|7700\s*900\s*\d{3}"  # mobile
    r"|808\s*157\s*0\d{3}"  # freephone
    r"|909\s*879\s*0\d{3}"  # premium rate
    r"|306\s*999\s*0\d{3}"  # UK-wide
    r")$"
)
_PHONE_LIKE = re.compile(r"(?:\+\s*44|\b0)[\d\s()-]{8,}\d")
_MADE_UP_POSTCODE = re.compile(r"\bXX\d{1,2}\s*\dXX\b", re.IGNORECASE)


@dataclass(frozen=True)
class Placeholder:
    field: str  # where it is set: "contact.email", "sender.from", "organisation.advice.cifas"
    value: str
    why: str

    def __str__(self) -> str:
        return f"{self.field} = {self.value!r} ({self.why})"


def placeholders(campaign: Campaign) -> list[Placeholder]:
    """Every stand-in of the shipped example in what the campaign's notices show of the
    organisation, each once, in the order a reader meets them."""
    found: dict[str, Placeholder] = {}
    for where, value in _shown(campaign):
        why = stand_in(value)
        if why is not None and where not in found:
            found[where] = Placeholder(where, value, why)
    return list(found.values())


def stand_in(text: str) -> str | None:
    """Why `text` is one of the example's stand-ins, or None when it is not."""
    if _EXAMPLE_DOMAIN.search(text):
        return "a domain reserved for examples"
    for match in _PHONE_LIKE.finditer(text):
        digits = re.sub(r"[^\d+]", "", match.group(0))
        number = "0" + digits[3:] if digits.startswith("+44") else digits
        if _DRAMA_NUMBERS.match(number):
            return "a telephone number reserved for drama: nobody answers it"
    if _MADE_UP_POSTCODE.search(text):
        return "a postcode that does not exist"
    return None


def _shown(campaign: Campaign) -> Iterator[tuple[str, str]]:
    """(where it is set, value) of everything a notice shows of the organisation."""
    yield "sender.from", campaign.sender
    for locale, address in sorted(campaign.reply_to.items()):
        yield f"sender.reply_to.{locale}", address
    for key in ("organisation", "name", "email", "phone", "postal_address"):
        values = {loc: getattr(contact, key) for loc, contact in sorted(campaign.contact.items())}
        # Named as notifier.toml sets it: [contact] when every locale shows the same.
        shared = len(set(values.values())) == 1
        for locale, value in values.items():
            where = f"contact.{key}" if shared else f"contact.{locale}.{key}"
            lines = value if isinstance(value, tuple) else (value,)
            for line in lines:
                yield where, line
    organisation = campaign.organisation
    for locale, text in sorted(organisation.independent_check.items()):
        yield f"organisation.independent_check.{locale}", text
    for body, line in sorted(organisation.advice.items()):
        yield f"organisation.advice.{body}", line

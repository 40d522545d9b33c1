"""The whole-campaign check: render every message of a campaign without sending, and
report each problem once, with the number of volunteers it affects and a few of them.

What counts as a problem:
- a render error (a missing variable, a syntax error), with template file and line;
- a catalog entry the templates use that is untranslated, fuzzy or absent (in every
  locale but the source language, English);
- en and ja templates out of step: a template file or a block in one locale only;
- a required element of a breach notice missing from a rendered part: the content that
  a UK GDPR Art. 34 notice and a Japanese APPI 本人通知 must carry (REQUIRED_ELEMENTS),
  judged by content, not only by presence: the data section lists the data (never
  empty), and the contact section, the anti-phishing section and the signature give the
  configured contact point;
- no contact point configured ([contact] in notifier.toml), or one that is the shipped
  example's stand-in (example.org, a drama phone number: notifier.placeholders), as any
  From, Reply-To or [organisation] setting that is;
- a volunteer whose data_held contradicts their exposure (screening records for someone
  who never attended a screening visit): their notice would tell them something untrue;
- a follow-up whose default cohort leaves out people the notice it follows promised to
  write to again (the followed notice's `follow_up_promise` block, rendered for them);
- a follow-up to someone whose exposure or data held the roster corrected after the
  notice it follows reached them, or whose address is now one that notice went to for
  someone else (a swap: their follow-up would reach the other person), until an approval
  confirms that address (notifier.told compares the roster with what the chain says the
  notice was sent from, so re-importing the right roster clears both);
- a name with a text-direction control, or an address mixing scripts;
- a link, URL, remote resource or attachment, unless the campaign sets allow_links;
- an empty audience.

Each volunteer is rendered once, through the same Renderer a send uses. The structural
checks (required elements, links in the templates) run once per shape of message
(Renderer.shape_key: locale, exposure, data_held, which name parts are present); the
names, the only other thing in a message, are checked for links per person. The report
also counts the people of each shape (locale × exposure × data held), for the proof
sheet (notifier.proof).
"""

from __future__ import annotations

import dataclasses
import html
import logging
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import nodes

from notifier.audience import (
    audience_states,
    audience_with_wording,
    history_applies,
    membership,
    reached_variants,
)
from notifier.campaign import Campaign, load_followed
from notifier.catalogs import catalog_problems
from notifier.errors import CampaignError, CatalogError, RenderError, TemplateRenderError
from notifier.event import EventKind
from notifier.ledger import Ledger, address_key
from notifier.locales import locale_spec
from notifier.message import REACHED_STATES
from notifier.placeholders import placeholders
from notifier.render import (
    FORMATS,
    RenderedMessage,
    Renderer,
    environment,
    listed,
    wording_template,
)
from notifier.told import SinceNotice, moved_since_notice, since_notice
from notifier.volunteer import (
    EXPOSURES,
    LATIN_FAMILY_NAME,
    Volunteer,
    data_held_contradiction,
    spoofing_risks,
    surname_initial,
)

log = logging.getLogger(__name__)

# Block name -> what it must tell the reader.
REQUIRED_ELEMENTS: Mapping[str, str] = {
    "what_happened": "what happened",
    "data_involved": "what data were involved",
    "consequences": "the likely consequences",
    "our_actions": "what we are doing about it",
    "your_actions": "what the person can do",
    "contact": "how to contact us",
    "anti_phishing": "what we never ask for, and how to check a message is genuine",
    "signature": "who the notice is from",
}
# The block of a notice that promises to write again: a follow-up must reach its readers.
PROMISE_BLOCK = "follow_up_promise"
# How many volunteer ids a problem names as examples.
EXAMPLES = 3

# Links, URLs, and anything that fetches or carries content from elsewhere.
_REST = r"[^\s<>\"']*"
LINK_PATTERN = re.compile(
    rf"https?://{_REST}|\bwww\.{_REST}|mailto:{_REST}|cid:{_REST}|<a\b[^>]*>"
    r"|<(?:img|link|iframe|object|embed|form|script|base)\b[^>]*>"
    r"|\b(?:src|href|action)\s*=",
    re.IGNORECASE,
)
_TAG = re.compile(r"<[^>]*>")
_WHITESPACE = re.compile(r"\s+")
_PART_NAMES = {"txt": "text", "html": "HTML"}


# A moved address an approver confirmed: (volunteer_id, address_key of their address now,
# the other volunteers the followed notice went to at that address).
ConfirmedMove = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True)
class Problem:
    # render_error | catalog | out_of_step | missing_element | contact | contradiction |
    # cohort | link | audience | correction | moved_address | spoofing | placeholder |
    # statement | surname | wording
    kind: str
    message: str
    volunteers: int  # how many volunteers of the audience it affects
    examples: tuple[str, ...] = ()  # a few of their volunteer ids

    def __str__(self) -> str:
        noun = "volunteer" if self.volunteers == 1 else "volunteers"
        example = f", e.g. {', '.join(self.examples)}" if self.examples else ""
        return f"{self.message} [{self.volunteers} {noun}{example}]"


@dataclass(frozen=True)
class ShapeCount:
    """One shape of the campaign's message: who gets it, for the proof sheet."""

    locale: str
    exposure: str
    data_held: tuple[str, ...]
    volunteers: int
    example: str  # the first volunteer id of this shape
    # For a follow-up: whether its earlier notice reached these readers (the wording
    # differs); None for a first notice.
    reached: bool | None = None


@dataclass(frozen=True)
class CheckReport:
    campaign_id: str
    volunteers: int
    by_locale: Mapping[str, int]
    history_applied: bool  # a follow-up narrowed by the outcomes of the campaign it follows
    notes: tuple[str, ...] = ()  # worth knowing, and no problem
    problems: tuple[Problem, ...] = field(default_factory=tuple)
    shapes: tuple[ShapeCount, ...] = field(default_factory=tuple)
    # The moved addresses taken as right (confirmed by an approval, or being confirmed).
    confirmed_moves: tuple[ConfirmedMove, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


class _Tally:
    """Problems in the order first seen, each with the volunteers it affects."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.examples: dict[tuple[str, str], list[str]] = {}

    def add(
        self, kind: str, message: str, volunteers: int = 1, examples: Iterable[str] = ()
    ) -> None:
        key = (kind, message)
        self.counts[key] = self.counts.get(key, 0) + volunteers
        known = self.examples.setdefault(key, [])
        for example in examples:
            if len(known) >= EXAMPLES:
                break
            if example not in known:
                known.append(example)

    def problems(self) -> tuple[Problem, ...]:
        return tuple(
            Problem(k, m, n, tuple(self.examples.get((k, m), ())))
            for (k, m), n in self.counts.items()
        )


class _InOrder:
    """Changes streamed in volunteer_id order, looked up in that order (a merge with the
    audience, which the ledger gives in the same order): one change held at a time."""

    def __init__(self, changes: Iterator[SinceNotice]) -> None:
        self._changes = changes
        self._next: SinceNotice | None = next(changes, None)

    def get(self, volunteer_id: str) -> SinceNotice | None:
        while self._next is not None and self._next.volunteer_id < volunteer_id:
            self._next = next(self._changes, None)
        if self._next is not None and self._next.volunteer_id == volunteer_id:
            return self._next
        return None


def check_campaign(
    ledger: Ledger,
    campaign: Campaign,
    *,
    progress: Callable[[], None] | None = None,
    confirm_moves: bool = False,
    allow_stand_ins: bool = False,
) -> CheckReport:
    """Render the campaign for its whole audience and report every problem.

    `confirm_moves`: the addresses a follow-up would send to that the followed notice
    went to for someone else are taken as confirmed (an approver says they are right);
    the report lists them in `confirmed_moves`, for the approval to record.
    `allow_stand_ins`: the shipped example's stand-ins (example.org, a drama phone number)
    are a note, not a problem: for the demo, whose messages only go into its own sink.
    """
    history = history_applies(ledger, campaign)
    notes: list[str] = []
    if campaign.follows and not history:
        # Not a problem: the follow-up's cohort is not known until the notice it follows
        # has gone out, so the check covers everyone it could go to.
        notes.append(
            f"{campaign.follows} has not been sent yet, so it is not yet known who it "
            f"reached; checked {campaign.campaign_id} for everyone it could go to "
            f"(this is fine before {campaign.follows} is sent)"
        )
    renderer = Renderer(campaign)
    tally = _Tally()
    # What the roster changed since the followed notice: the moved addresses (few) held,
    # the rest streamed in volunteer_id order beside the audience, never a dict of all.
    follows = campaign.follows if history else None
    moved = [c for c in moved_since_notice(ledger, follows) if c.address_moved] if follows else []
    changes = _InOrder(since_notice(ledger, follows, moved) if follows else iter(()))
    confirmed = set(_confirmed_moves(ledger, campaign)) if follows else set()
    if confirm_moves:
        confirmed |= {confirmed_move(c) for c in moved}
    by_locale: Counter[str] = Counter()
    by_exposure: Counter[tuple[str, str]] = Counter()
    examples_by_locale: dict[str, list[str]] = {}
    shapes: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
    shape_counts: dict[tuple[str, str, tuple[str, ...], bool | None], list[Any]] = {}
    failed_locales: set[str] = set()
    # A follow-up reads differently to people its earlier notice did not reach: each is
    # checked in the wording they get; before that notice has gone out, in every wording
    # the campaign's follows_states can give.
    for volunteer, reached_now in audience_with_wording(ledger, campaign, history=history):
        by_locale[volunteer.locale] += 1
        by_exposure[(volunteer.locale, volunteer.exposure)] += 1
        if len(examples := examples_by_locale.setdefault(volunteer.locale, [])) < EXAMPLES:
            examples.append(volunteer.volunteer_id)
        variants = (reached_now,) if history else reached_variants(campaign)
        for reached in variants:
            counted = shape_counts.setdefault(
                (volunteer.locale, volunteer.exposure, volunteer.data_held, reached),
                [0, volunteer.volunteer_id],
            )
            counted[0] += 1
        if progress is not None:
            progress()
        _check_contradiction(volunteer, tally)
        _check_spoofing(volunteer, tally)
        _check_surname_rule(campaign, volunteer, tally)
        change = changes.get(volunteer.volunteer_id)
        if change is not None:
            _report_changes(campaign, change, confirmed, tally)
        for reached in variants:
            if volunteer.locale not in failed_locales:
                _check_volunteer(renderer, volunteer, reached, shapes, tally, failed_locales)
    for locale, problem in _template_problems(campaign, failed_locales):
        tally.add(problem[0], problem[1], by_locale[locale], examples_by_locale.get(locale, ()))
    for (locale, exposure), message in _wording_problems(renderer).items():
        tally.add("wording", message, by_exposure[(locale, exposure)])
    total = sum(by_locale.values())
    if total == 0:
        tally.add("audience", "nobody in the audience: check the roster and the filters", 0)
    elif not campaign.contact:
        tally.add(
            "contact",
            "no contact point configured: add [contact] to notifier.toml (organisation, "
            "name, email, postal_address, optional phone; [contact.ja] for Japanese "
            "notices): every notice must say who to contact and how to check a message",
            total,
            [e for ids in examples_by_locale.values() for e in ids],
        )
    _promise_problems(ledger, campaign, history, tally)
    _statement_problems(campaign, by_locale, by_exposure, tally)
    notes.extend(_stand_in_problems(campaign, total, allow_stand_ins, tally))
    return CheckReport(
        campaign_id=campaign.campaign_id,
        volunteers=total,
        by_locale=dict(sorted(by_locale.items())),
        history_applied=history,
        notes=tuple(notes),
        problems=tally.problems(),
        shapes=tuple(
            ShapeCount(locale, exposure, data_held, count, example, reached)
            for (locale, exposure, data_held, reached), (count, example) in shape_counts.items()
        ),
        confirmed_moves=tuple(
            sorted(confirmed_move(c) for c in moved if confirmed_move(c) in confirmed)
        ),
    )


def _statement_problems(
    campaign: Campaign,
    by_locale: Mapping[str, int],
    by_exposure: Mapping[tuple[str, str], int],
    tally: _Tally,
) -> None:
    """What a notice cannot say without the organisation's own statement: how to check a
    message in a way a forged one cannot imitate (every reader), and what the volunteer
    database holds (database-only readers: the data involved for them)."""
    statements = campaign.organisation
    for locale, count in by_locale.items():
        if count and not statements.independent_check.get(locale):
            tally.add(
                "statement",
                f"no independent way to check a message for {locale} readers: a forged "
                "notice gives its own contact details, so set [organisation] "
                f"independent_check.{locale} in notifier.toml (where people find your "
                "number for themselves, such as the study paperwork)",
                count,
            )
    never_screened = sum(n for (_loc, exp), n in by_exposure.items() if exp == "database_only")
    if never_screened and not statements.database_holds:
        tally.add(
            "statement",
            "database-only readers' notices cannot say what data of theirs were involved: "
            "what the volunteer database holds is for the organisation to say; set "
            "[organisation] database_holds in notifier.toml",
            never_screened,
        )


def _stand_in_problems(campaign: Campaign, total: int, allowed: bool, tally: _Tally) -> list[str]:
    """The shipped example's stand-ins in what the notices show of the organisation: a
    problem each (every notice carries it), or, where they are allowed, one note."""
    found = placeholders(campaign)
    if allowed:
        if not found:
            return []
        fields = ", ".join(p.field for p in found)
        return [
            f"the messages carry the example organisation's stand-ins ({fields}): fine for "
            "the demo, which sends only into its own sink; a real send refuses them"
        ]
    for placeholder in found:
        tally.add(
            "placeholder",
            f"{placeholder.field} is the shipped example's {placeholder.value!r} "
            f"({placeholder.why}): every notice would give it to its reader; set your "
            "organisation's own in notifier.toml",
            total,
        )
    return []


def _check_contradiction(volunteer: Volunteer, tally: _Tally) -> None:
    items = data_held_contradiction(volunteer.exposure, volunteer.data_held)
    if items:
        tally.add(
            "contradiction",
            f"{volunteer.exposure} volunteers with screening records in data_held: someone "
            "who never attended a screening visit has none, so their notice would be "
            "untrue; correct the exposure or the data held in the roster and import it again",
            1,
            [volunteer.volunteer_id],
        )


def _check_surname_rule(campaign: Campaign, volunteer: Volunteer, tally: _Tally) -> None:
    """A published volunteer whose family name does not begin with one of the initials
    the campaign says the published records had: their notice would tell them so."""
    initials = campaign.facts.published_surname_initials
    if not initials or volunteer.exposure != "published":
        return
    initial = surname_initial(volunteer)
    if initial in initials:
        return
    letters = listed(initials, "en", "or")
    if initial is None:
        why = (
            f"published volunteers whose family name is not in Latin letters, so it cannot "
            f"be told whether it begins with {letters} (the initials {campaign.campaign_id} "
            f"says the published records had): give it as their records spell it, in a "
            f"{LATIN_FAMILY_NAME} column of the roster, or correct their exposure"
        )
    else:
        why = (
            f"published volunteers whose family name does not begin with {letters}, the "
            f"initials {campaign.campaign_id} says the published records had: their notice "
            "would tell them so; check their exposure (or their name) in the roster"
        )
    tally.add("surname", why, 1, [volunteer.volunteer_id])


def _check_spoofing(volunteer: Volunteer, tally: _Tally) -> None:
    for part, _value, reason in spoofing_risks(volunteer):
        tally.add(
            "spoofing",
            f"volunteers whose {part} could mislead ({reason.split(':')[0]}): their notice "
            "could read wrong or reach the wrong person; correct the roster and import it "
            "again",
            1,
            [volunteer.volunteer_id],
        )


def _report_changes(
    campaign: Campaign, change: SinceNotice, confirmed: Collection[ConfirmedMove], tally: _Tally
) -> None:
    """What the roster changed since the followed notice reached this person, as problems:
    a correction of what it said, an address another person's notice went to."""
    if change.corrected:
        _report_correction(campaign, change, tally)
    if change.address_moved and confirmed_move(change) not in confirmed:
        others = ", ".join(change.address_was_told_to)
        tally.add(
            "moved_address",
            f"volunteer {change.volunteer_id} now has the address {campaign.follows} was "
            f"sent to for volunteer {others}: {campaign.campaign_id} would put "
            f"{change.volunteer_id}'s notice in {others}'s mailbox. If the roster swapped "
            "their addresses by mistake, import the right roster again; if the address "
            "really is theirs now, confirm it: notifier approve "
            f'{campaign.campaign_id} --by "NAME" --confirm-moved-addresses',
            1,
            [change.volunteer_id, *change.address_was_told_to],
        )


def confirmed_move(change: SinceNotice) -> ConfirmedMove:
    """How an approval records that it confirmed one moved address (see CheckReport)."""
    return (change.volunteer_id, address_key(change.address_now), change.address_was_told_to)


def _confirmed_moves(ledger: Ledger, campaign: Campaign) -> set[ConfirmedMove]:
    """The moved addresses the campaign's latest approval confirmed."""
    kinds = [EventKind.CAMPAIGN_APPROVED]
    events = ledger.events(campaign_id=campaign.campaign_id, kinds=kinds, newest_first=True)
    latest = next(iter(events), None)
    check = latest.data.get("check") if latest is not None else None
    moves = check.get("confirmed_moves") if isinstance(check, Mapping) else None
    return {(str(v), str(a), tuple(map(str, o))) for v, a, o in moves or ()}


def _report_correction(campaign: Campaign, change: SinceNotice, tally: _Tally) -> None:
    fields = " and ".join(change.corrected)
    tally.add(
        "correction",
        f"people whose {fields} the roster corrected after {campaign.follows} reached "
        f"them: {campaign.campaign_id}, written from the corrected roster, would tell them "
        '"as we told you in our earlier notice" something that notice did not say; write '
        "to them apart (a correction of their own), or undo the roster change if it was "
        "the mistake",
        1,
        [change.volunteer_id],
    )


def _check_volunteer(
    renderer: Renderer,
    volunteer: Volunteer,
    reached: bool | None,
    shapes: dict[tuple[Any, ...], list[tuple[str, str]]],
    tally: _Tally,
    failed_locales: set[str],
) -> None:
    vid = [volunteer.volunteer_id]
    try:
        renderer.render(volunteer, reached=reached)
    except TemplateRenderError as exc:
        tally.add("render_error", f"{exc.location()}: {exc.detail}", 1, vid)
        return
    except RenderError as exc:
        # The templates of this locale cannot be loaded at all: say so once.
        tally.add("render_error", str(exc).splitlines()[0], 1, vid)
        failed_locales.add(volunteer.locale)
        return
    # A message is its shape with the person's names put in (see Renderer), so the
    # shape is checked once and each person's names on their own: scanning every whole
    # message for links would cost more than rendering it.
    key = renderer.shape_key(volunteer, reached=reached)
    found_problems = shapes.get(key)
    if found_problems is None:
        found_problems = _shape_problems(renderer, volunteer, reached)
        shapes[key] = found_problems
    for kind, text in found_problems:
        tally.add(kind, text, 1, vid)
    if not renderer.campaign.allow_links:
        _name, family, given = renderer.names(volunteer)
        links = {m.group(0)[:60] for part in (family, given) for m in LINK_PATTERN.finditer(part)}
        for link in sorted(links):
            tally.add(
                "link", f"link or URL {link!r} in a volunteer's name: correct the roster", 1, vid
            )


def _link_problems(message: RenderedMessage) -> list[tuple[str, str]]:
    found: dict[str, list[str]] = {}
    for part, content in (
        ("subject", message.subject),
        ("text", message.text),
        ("HTML", message.html),
    ):
        for match in LINK_PATTERN.finditer(content):
            parts = found.setdefault(match.group(0)[:60], [])
            if part not in parts:
                parts.append(part)
    return [
        (
            "link",
            f"link, URL or attachment {link!r} in the {' and '.join(parts)} "
            f"part{'s' if len(parts) > 1 else ''}: a breach notice carries none "
            "(set allow_links = true in the campaign to allow)",
        )
        for link, parts in found.items()
    ]


def _shape_problems(
    renderer: Renderer, volunteer: Volunteer, reached: bool | None
) -> list[tuple[str, str]]:
    """Links, and required elements missing or incomplete, in one shape of message."""
    problems: list[tuple[str, str]] = []
    if not renderer.campaign.allow_links:
        # The shape with neutral names: links from names are counted per person.
        neutral = dataclasses.replace(
            volunteer,
            family_name="X" if volunteer.family_name.strip() else "",
            given_name="X" if volunteer.given_name.strip() else "",
        )
        problems.extend(_link_problems(renderer.render(neutral, reached=reached)))
    missing: dict[str, list[str]] = {}
    for fmt in FORMATS:
        try:
            whole, blocks = renderer.render_blocks(volunteer, fmt, reached=reached)
        except RenderError:
            return []  # already reported by the full render
        compact_whole = _compact(whole)
        for element in REQUIRED_ELEMENTS:
            output = blocks.get(element)
            if output is None:
                reason = "no block"
            elif not _visible(output):
                reason = "empty"
            elif _compact(output) not in compact_whole:
                reason = "not placed in the layout"
            else:
                reason = _content_gap(renderer.campaign, volunteer.locale, element, output, fmt)
                if not reason:
                    continue
            missing.setdefault(f"{element}: {reason}", []).append(_PART_NAMES[fmt])
    where = f"{volunteer.locale} × {volunteer.exposure}"
    if volunteer.data_held:
        where += f" × {', '.join(volunteer.data_held)}"
    if reached is False:
        where += f" × {renderer.campaign.follows} not received"
    for what, parts in missing.items():
        element, reason = what.split(": ", 1)
        problems.append(
            (
                "missing_element",
                f"required element {element!r} ({REQUIRED_ELEMENTS[element]}) missing from "
                f"the {' and '.join(parts)} part for {where} ({reason}; template "
                f"{renderer.template_name('txt' if parts[0] == 'text' else 'html')})",
            )
        )
    return problems


def _content_gap(campaign: Campaign, locale: str, element: str, output: str, fmt: str) -> str:
    """Why a present block does not say what it must ("" if it does)."""
    if element == "data_involved":
        bullet = locale_spec(locale).text_style.bullet.strip()
        lines = output.splitlines()
        listed = (
            "<li>" in output if fmt == "html" else any(x.strip().startswith(bullet) for x in lines)
        )
        # Without [organisation] database_holds a database-only reader's notice has no
        # list to give: _statement_problems says so once, for all of them.
        return "" if listed or not campaign.organisation.database_holds else "no list of the data"
    contact = campaign.contact.get(locale)
    if contact is None:
        return ""  # reported once for the campaign: no contact point configured
    wanted: list[tuple[str, str]] = []
    if element == "contact":
        wanted = [
            ("organisation", contact.organisation),
            ("name", contact.name),
            ("email", contact.email),
            *(("postal address", line) for line in contact.postal_address),
            *([("phone", contact.phone)] if contact.phone else []),
        ]
    elif element == "anti_phishing":
        wanted = [("email", contact.email)]
    elif element == "signature":
        wanted = [("organisation", contact.organisation), ("name", contact.name)]
    text = _compact(html.unescape(_TAG.sub("", output)) if fmt == "html" else output)
    absent = sorted({label for label, value in wanted if _compact(value) not in text})
    return f"the contact point's {', '.join(absent)} not given" if absent else ""


def _promise_problems(ledger: Ledger, campaign: Campaign, history: bool, tally: _Tally) -> None:
    """People the followed notice promised to write to again, left out of this cohort."""
    try:
        followed = load_followed(campaign)
    except CampaignError as exc:
        tally.add("cohort", str(exc).splitlines()[0], 0)
        return
    if followed is None:
        return
    renderer = Renderer(followed)
    promised_by_shape: dict[tuple[Any, ...], bool] = {}
    # reason -> how many, and the first few of them: never a list of everyone left out.
    left_out: dict[str, tuple[int, list[str]]] = {}
    # The followed notice's audience, each with where their notice stands, streamed.
    for volunteer, found in audience_states(ledger, followed, followed.campaign_id, False):
        state = found if history else None
        if history and state not in REACHED_STATES:
            continue  # the earlier notice never reached them: it promised them nothing
        key = renderer.shape_key(volunteer)
        promised = promised_by_shape.get(key)
        if promised is None:
            try:
                _whole, blocks = renderer.render_blocks(volunteer, FORMATS[0])
                promised = bool(_visible(blocks.get(PROMISE_BLOCK, "")))
            except RenderError:
                promised = False
            promised_by_shape[key] = promised
        if not promised:
            continue
        # Before the earlier notice is sent, ask about every state it can reach them in.
        reached = (state,) if history else REACHED_STATES
        verdicts = [(s, membership(campaign, volunteer, s)) for s in reached]
        missed = [(s, verdict) for s, verdict in verdicts if not verdict.included]
        if not missed:
            continue
        left_out_by = missed[0][1].left_out_by
        if left_out_by == "exposure":
            reason = f"exposure {volunteer.exposure} is not in its audience"
        elif left_out_by == "locale":
            reason = f"locale {volunteer.locale} is not in its audience"
        else:
            in_states = ", ".join(str(s) for s, _ in missed)
            reason = f"follows_states leaves out people whose notice is {in_states}"
        count, examples = left_out.get(reason, (0, []))
        if len(examples) < EXAMPLES:
            examples.append(volunteer.volunteer_id)
        left_out[reason] = (count + 1, examples)
    where = campaign.path or campaign.campaign_id
    for reason, (count, ids) in left_out.items():
        tally.add(
            "cohort",
            f"{followed.campaign_id} promised to write to these people again, but the default "
            f"cohort of {campaign.campaign_id} leaves them out ({reason}): widen [audience] "
            f"in {where}",
            count,
            ids,
        )


def _visible(output: str) -> str:
    return _WHITESPACE.sub("", _TAG.sub("", output))


def _compact(output: str) -> str:
    return _WHITESPACE.sub("", output)


# --- templates and catalogs -----------------------------------------------------------


def _template_problems(
    campaign: Campaign, failed_locales: set[str]
) -> list[tuple[str, tuple[str, str]]]:
    """(locale affected, (kind, message)) for out-of-step templates and bad catalog entries."""
    problems: list[tuple[str, tuple[str, str]]] = []
    blocks_by_locale: dict[str, dict[str, set[str]]] = {}
    for locale in campaign.locales:
        try:
            files = template_blocks(campaign, locale)
        except jinja2.TemplateError as exc:
            if locale not in failed_locales:  # else already reported by the render
                problems.append((locale, ("render_error", _describe(exc))))
            continue
        blocks_by_locale[locale] = files
        for where in exposure_tests(campaign, locale, files):
            problems.append(
                (
                    locale,
                    (
                        "wording",
                        f"{where} reads the reader's exposure: what differs by exposure "
                        f"belongs in {campaign.template}/<exposure>.j2, chosen by name",
                    ),
                )
            )
        try:
            used = used_msgids(campaign, locale, files)
            entries = catalog_problems(locale, used, campaign.locale_dir)
        except (CatalogError, jinja2.TemplateError) as exc:
            problems.append((locale, ("catalog", str(exc).splitlines()[0])))
            continue
        for entry in entries:
            where = f"{entry.file}:{entry.line}" if entry.line else str(entry.file)
            problems.append((locale, ("catalog", f"{where}: {entry.reason} entry {entry.msgid!r}")))
    problems.extend(_out_of_step(blocks_by_locale))
    return problems


def _wording_problems(renderer: Renderer) -> dict[tuple[str, str], str]:
    """(locale, exposure) -> why the campaign has no wording there that renders, for
    every exposure its audience admits in every locale (whether or not anyone of that
    exposure is on the roster yet): a missing `<template>/<exposure>.j2`, or one that
    fails to render for a reader with nothing on record, in every wording a follow-up
    takes. Nothing falls through to another exposure's words."""
    campaign = renderer.campaign
    problems: dict[tuple[str, str], str] = {}
    for locale in campaign.locales:
        for exposure in campaign.audience.exposures or EXPOSURES:
            name = wording_template(campaign, exposure)
            path = campaign.templates_dir / locale / name
            if not path.is_file():
                problems[(locale, exposure)] = (
                    f"no wording for {exposure} readers in {locale}: {path} is missing "
                    "(each exposure has its own, in every locale)"
                )
                continue
            reader = Volunteer("wording", "", "", "X", "X", locale, exposure)
            for reached in reached_variants(campaign):
                try:
                    renderer.render(reader, reached=reached)
                except RenderError as exc:
                    problems[(locale, exposure)] = (
                        f"the wording for {exposure} readers in {locale} does not render: "
                        f"{str(exc).splitlines()[0]}"
                    )
                    break
    return problems


def _describe(exc: jinja2.TemplateError) -> str:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{exc.filename or exc.name}:{exc.lineno}: template syntax error: {exc.message}"
    if isinstance(exc, jinja2.TemplateNotFound):
        return f"template not found: {exc.name}"
    return f"{type(exc).__name__}: {exc.message}"


def _out_of_step(
    blocks_by_locale: Mapping[str, Mapping[str, set[str]]],
) -> list[tuple[str, tuple[str, str]]]:
    problems: list[tuple[str, tuple[str, str]]] = []
    for locale, files in blocks_by_locale.items():
        for other, other_files in blocks_by_locale.items():
            if other == locale:
                continue
            for name, blocks in sorted(other_files.items()):
                if name not in files:
                    message = f"template {other}/{name} has no counterpart {locale}/{name}"
                    problems.append((locale, ("out_of_step", message)))
                    continue
                for block in sorted(blocks - files[name]):
                    message = f"block {block!r} is in {other}/{name} but not in {locale}/{name}"
                    problems.append((locale, ("out_of_step", message)))
    return problems


def template_blocks(campaign: Campaign, locale: str) -> dict[str, set[str]]:
    """Every template file the campaign uses in `locale` (both formats) -> its block names."""
    result: dict[str, set[str]] = {}
    # The exposure's own wording is imported by name (`wording_for`): every exposure's
    # that exists is one of the campaign's templates (a missing one: _wording_problems).
    wordings = [
        name
        for name in (
            wording_template(campaign, e) for e in campaign.audience.exposures or EXPOSURES
        )
        if (campaign.templates_dir / locale / name).is_file()
    ]
    for fmt in FORMATS:
        env = environment(campaign, locale, fmt)
        pending = [f"{campaign.template}.{fmt}"]
        while pending:
            name = pending.pop()
            if name in result:
                continue
            tree = _parse(env, name)
            result[name] = {block.name for block in tree.find_all(nodes.Block)}
            pending.extend(_references(tree, fmt, wordings))
    return result


def exposure_tests(campaign: Campaign, locale: str, files: Iterable[str]) -> list[str]:
    """`file:line` of every place a template reads the reader's exposure: wording chosen
    by a test of it is wording that falls through to another exposure's (the render does
    not even define it, see Renderer.context)."""
    env = environment(campaign, locale, FORMATS[0])
    found = []
    for name in sorted(files):
        for node in _parse(env, name).find_all(nodes.Name):
            if node.name == "exposure":
                found.append(f"{locale}/{name}:{node.lineno}")
    return found


def used_msgids(campaign: Campaign, locale: str, files: Iterable[str]) -> set[str]:
    """The msgids that `_()` / gettext calls in these templates look up."""
    env = environment(campaign, locale, FORMATS[0])
    used: set[str] = set()
    for name in files:
        source = _source(env, name)
        for _line, _function, message in env.extract_translations(source):  # type: ignore[attr-defined]
            strings = message if isinstance(message, tuple) else (message,)
            used.update(s for s in strings[:1] if isinstance(s, str))
    return used


def _source(env: jinja2.Environment, name: str) -> str:
    assert env.loader is not None
    source, _filename, _uptodate = env.loader.get_source(env, name)
    return source


def _parse(env: jinja2.Environment, name: str) -> nodes.Template:
    return env.parse(_source(env, name), name=name)


def _references(tree: nodes.Template, fmt: str, wordings: Iterable[str] = ()) -> list[str]:
    """Templates this one extends, includes or imports; `format` is known per part, and
    `wording_for` stands for every exposure's wording (`wordings`)."""
    names: list[str] = []
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        expr = getattr(node, "template", None)
        if isinstance(expr, nodes.Name) and expr.name == "wording_for":
            names.extend(wordings)
            continue
        name = _static_name(expr, fmt) if isinstance(expr, nodes.Expr) else None
        if name is not None:
            names.append(name)
    return names


def _static_name(expr: nodes.Expr, fmt: str) -> str | None:
    if isinstance(expr, nodes.Const) and isinstance(expr.value, str):
        return expr.value
    if isinstance(expr, nodes.Name) and expr.name == "format":
        return fmt
    if isinstance(expr, nodes.Concat):
        parts = [_static_name(part, fmt) for part in expr.nodes]
        return None if None in parts else "".join(p for p in parts if p is not None)
    return None

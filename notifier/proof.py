"""The proof sheet: every version of a campaign's notice, once, for sign-off.

A version (a "shape" in the code: notifier.check.ShapeCount) is what a message depends on
besides the reader's name: locale × exposure × the set of data held. The sheet calls them
"versions of the notice", the words of the people who read it. It is one self-contained HTML
page (no scripts, links, images or anything fetched from elsewhere, so it can be mailed,
archived and printed as it is) showing, for each exposure × data held, the English and
the Japanese notice side by side, with how many people get each and one example volunteer
id. Names are placeholders: the sheet proves the wording, not a person's message. Printed,
it takes about one A4 page per version (its print stylesheet; tests/test_proof.py counts).

This is what a data-protection officer reads, in full, before approving a send:

    notifier check 2020-03-breach --proof proof.html
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

from notifier.campaign import Campaign
from notifier.check import CheckReport, ShapeCount
from notifier.compose import compose_message
from notifier.errors import NotifierError
from notifier.locales import locale_spec
from notifier.render import RenderedMessage, Renderer, long_date
from notifier.times import shown_time
from notifier.volunteer import DATA_HELD, EXPOSURES, LOCALES, Volunteer

_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.DOTALL | re.IGNORECASE)

_STYLE = Markup("""
body { font-family: Arial, Helvetica, sans-serif; color: #1a1a1a; margin: 2em; }
h1 { font-size: 24px; }
h2 { font-size: 20px; margin-top: 2.5em; border-top: 3px solid #1a1a1a; padding-top: 0.5em; }
table.facts td, table.facts th, table.index td, table.index th {
  text-align: left; vertical-align: top; padding: 0.2em 1em 0.2em 0; }
table.index td.n { text-align: right; white-space: nowrap; }
table.shape { width: 100%; border-collapse: collapse; table-layout: fixed; }
table.shape > tbody > tr > td, table.shape > thead > tr > th {
  width: 50%; vertical-align: top; border: 1px solid #999; padding: 0.8em; }
table.shape > thead > tr > th { background: #eee; text-align: left; }
.headers { font-size: 14px; background: #f6f6f6; padding: 0.5em; margin-bottom: 1em; }
.headers div { margin: 0.1em 0; }
.who { font-weight: bold; }
.nobody { color: #666; font-style: italic; }
.problems li { color: #a00000; }
.ok { color: #006000; font-weight: bold; }
pre { white-space: pre-wrap; font-size: 13px; }
details { margin-top: 1em; }
.notice h2 { border: none; padding-top: 0; }
/* On paper: about one A4 page per version of the notice. No section starts a page of its
   own (most pages were left empty that way); the versions follow one another, English above
   Japanese rather than side by side, each notice in two columns (its many short lines:
   lists, addresses, headings, fill half a line rather than a whole one); no paragraph, list
   item or header block is split, and no heading is left at the foot of a page. */
@media print {
  @page { size: A4; margin: 10mm; }
  body { margin: 0; font-size: 8pt; line-height: 1.2;
    font-family: Arial, "Liberation Sans", Helvetica, sans-serif; }
  h1 { font-size: 13pt; margin: 0 0 0.3em; }
  h2 { font-size: 10.5pt; margin: 1em 0 0.3em; padding-top: 0.3em; border-top-width: 2px;
    break-after: avoid; page-break-after: avoid; }
  table.facts tr, table.index tr, .headers, .who, .notice p, .notice li, .notice h2 {
    break-inside: avoid; page-break-inside: avoid; }
  .who, .headers, .notice h2 { break-after: avoid; page-break-after: avoid; }
  table.shape, table.shape > tbody, table.shape > tbody > tr, table.shape > tbody > tr > td {
    display: block; width: auto; }
  table.shape > thead { display: none; }
  table.shape > tbody > tr > td {
    border: none; border-top: 1px solid #999; padding: 0.2em 0 0.5em; }
  .headers { font-size: 7.5pt; padding: 0.2em 0.4em; margin-bottom: 0.3em; }
  .who { margin: 0.2em 0; }
  .notice { columns: 2; column-gap: 1.5em; }
  /* The notices' own inline heading and paragraph spacing is for a screen. */
  .notice h2 { font-size: 8.5pt !important; margin: 0.5em 0 0.1em !important;
    padding: 0; border: none; }
  .notice p, .notice ul { margin: 0.2em 0 !important; }
  .notice ul { padding-left: 1.4em; }
  details { display: none; }
}
""")


def data_held_key(data_held: Sequence[str]) -> tuple[int, tuple[int, ...]]:
    """Shapes in a reading order: nothing on record first, then by how much is held."""
    return len(data_held), tuple(DATA_HELD.index(d) for d in data_held if d in DATA_HELD)


# One row of the proof sheet: (exposure, data held, whether a follow-up's earlier notice
# reached the reader or None), and the shape in each locale.
ShapeGroup = tuple[str, tuple[str, ...], bool | None, dict[str, ShapeCount]]
# A rendered shape: (locale, exposure, data held, reached).
RenderedKey = tuple[str, str, tuple[str, ...], bool | None]


def group_shapes(shapes: Iterable[ShapeCount]) -> list[ShapeGroup]:
    """(exposure, data_held, reached, {locale: shape}) in reading order: exposure, then
    data held, then (for a follow-up) those it reached before those it did not."""
    groups: dict[tuple[str, tuple[str, ...], bool | None], dict[str, ShapeCount]] = {}
    for shape in shapes:
        groups.setdefault((shape.exposure, shape.data_held, shape.reached), {})[shape.locale] = (
            shape
        )
    order = sorted(
        groups,
        key=lambda k: (
            EXPOSURES.index(k[0]) if k[0] in EXPOSURES else 99,
            data_held_key(k[1]),
            k[2] is False,
        ),
    )
    return [
        (exposure, held, reached, groups[(exposure, held, reached)])
        for exposure, held, reached in order
    ]


def placeholder_volunteer(locale: str, exposure: str, data_held: tuple[str, ...]) -> Volunteer:
    family, given = locale_spec(locale).placeholder_names
    return Volunteer(
        volunteer_id="proof",
        email="proof@example.org",
        email_ascii="proof@example.org",
        family_name=family,
        given_name=given,
        locale=locale,
        exposure=exposure,
        data_held=data_held,
    )


def render_shape(renderer: Renderer, shape: ShapeCount) -> RenderedMessage:
    volunteer = placeholder_volunteer(shape.locale, shape.exposure, shape.data_held)
    return renderer.render(volunteer, reached=shape.reached)


def proof_sheet(
    campaign: Campaign, report: CheckReport, *, now: datetime | None = None, zone: str = "UTC"
) -> str:
    """The whole proof sheet of `campaign`, as checked in `report`, as one HTML page."""
    now = now or datetime.now(UTC)
    renderer = Renderer(campaign)
    groups = group_shapes(report.shapes)
    locales = [loc for loc in LOCALES if loc in campaign.locales]
    rendered: dict[RenderedKey, RenderedMessage] = {}
    for _exposure, _held, _reached, by_locale in groups:
        for shape in by_locale.values():
            key = (shape.locale, shape.exposure, shape.data_held, shape.reached)
            rendered[key] = render_shape(renderer, shape)
    fingerprint = hashlib.sha256()
    for key in sorted(rendered):
        fingerprint.update(repr(key).encode("utf-8"))
        fingerprint.update(rendered[key].text.encode("utf-8"))
        fingerprint.update(rendered[key].html.encode("utf-8"))

    parts: list[Markup] = [
        Markup('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'),
        Markup("<title>Proof: %s</title>\n<style>%s</style>\n</head>\n<body>\n")
        % (campaign.campaign_id, _STYLE),
        Markup("<h1>Proof sheet: %s</h1>\n") % campaign.campaign_id,
        _facts(campaign, report, len(groups), fingerprint.hexdigest(), now, zone),
        _problems(report),
        _statements(campaign),
        _index(groups, locales),
    ]
    for number, group in enumerate(groups, start=1):
        parts.append(_shape_section(number, group, locales, rendered, campaign, now))
    parts.append(Markup("</body>\n</html>\n"))
    return str(Markup("").join(parts))


def _facts(
    campaign: Campaign,
    report: CheckReport,
    sections: int,
    fingerprint: str,
    now: datetime,
    zone: str,
) -> Markup:
    audience = campaign.audience
    rows: list[tuple[str, str]] = [
        ("Campaign", f"{campaign.campaign_id}: {campaign.title}"),
        ("Notice date", long_date(campaign.notice_date, "en")),
        ("Template", f"{campaign.templates_dir}/<locale>/{campaign.template}.txt, .html"),
        ("Exposures", ", ".join(audience.exposures or EXPOSURES)),
        ("Locales", ", ".join(campaign.locales)),
    ]
    if campaign.follows:
        states = ", ".join(audience.follows_states)
        rows.append(("Follows", f"{campaign.follows} (people whose message there is: {states})"))
    by_locale = ", ".join(f"{loc} {n}" for loc, n in report.by_locale.items())
    rows.append(("Recipients", f"{report.volunteers} ({by_locale or 'none'})"))
    rows.extend(("Note", note) for note in report.notes)
    for locale in campaign.locales:
        contact = campaign.contact.get(locale)
        if contact is None:
            described = "NOT CONFIGURED: add [contact] to notifier.toml"
        else:
            bits = [contact.name, contact.organisation, *contact.postal_address, contact.email]
            described = " · ".join([*bits, *([contact.phone] if contact.phone else [])])
        rows.append((f"Contact point ({locale})", described))
    variants = " × whether the earlier notice reached them" if campaign.follows else ""
    rows.append(
        (
            "Versions of the notice",
            f"{len(report.shapes)} (one for each language × exposure × data held{variants}),"
            f" each shown once below, in {sections} section{'' if sections == 1 else 's'}",
        )
    )
    rows.append(("Content fingerprint", f"sha256 {fingerprint} (of every version shown)"))
    rows.append(("Made", shown_time(now, zone, precision="minutes")))
    body = Markup("").join(Markup("<tr><th>%s</th><td>%s</td></tr>\n") % row for row in rows)
    intro = Markup(
        "<p>Every version of the notice this campaign sends, English and Japanese side by "
        "side. There is one version for each language × exposure × set of data held; the "
        "people who get one version receive the same words but for their name, shown here "
        "as a placeholder.</p>\n"
    )
    return intro + Markup('<table class="facts">\n%s</table>\n') % body


def _statements(campaign: Campaign) -> Markup:
    """The organisation's own statements the notices make, from notifier.toml's
    [organisation]: the approver vouches for them, as nobody else can."""
    statements = campaign.organisation.statements()
    intro = Markup(
        '<h2 style="border: none;">The organisation\'s own statements</h2>\n'
        "<p>Facts only the organisation can vouch for, from notifier.toml "
        "[organisation]. The notices state each one set here, and nothing in their "
        "place where one is not.</p>\n"
    )
    if not statements:
        return intro + Markup('<p class="nobody">None set: the notices state none.</p>\n')
    rows = Markup("").join(
        Markup("<tr><th>%s</th><td>%s</td></tr>\n") % (name, value) for name, value in statements
    )
    return intro + Markup('<table class="facts statements">\n%s</table>\n') % rows


def _problems(report: CheckReport) -> Markup:
    if report.ok:
        return Markup('<p class="ok">notifier check: no problems.</p>\n')
    items = Markup("").join(Markup("<li>%s</li>\n") % str(p) for p in report.problems)
    count = len(report.problems)
    return Markup(
        '<h2 style="border: none;">notifier check found %d problem%s: do not approve</h2>\n'
        '<ul class="problems">\n%s</ul>\n'
    ) % (count, "" if count == 1 else "s", items)


def _index(groups: Sequence[ShapeGroup], locales: Sequence[str]) -> Markup:
    head = Markup("").join(Markup("<th>%s</th>") % locale_spec(loc).name for loc in locales)
    rows = []
    for number, (exposure, held, reached, by_locale) in enumerate(groups, start=1):
        cells = Markup("").join(
            Markup('<td class="n">%s</td>') % _who(by_locale.get(loc)) for loc in locales
        )
        rows.append(
            Markup("<tr><td>%d</td><td>%s</td><td>%s</td>%s</tr>\n")
            % (number, _exposure(exposure, reached), _held(held), cells)
        )
    return Markup(
        '<h2 style="border: none;">Versions of the notice</h2>\n<table class="index">\n'
        "<tr><th>#</th><th>exposure</th><th>data held</th>%s</tr>\n%s</table>\n"
    ) % (head, Markup("").join(rows))


def _exposure(exposure: str, reached: bool | None) -> str:
    """The exposure, and for a follow-up's readers its earlier notice did not reach, so."""
    return f"{exposure} (earlier notice not received)" if reached is False else exposure


def _held(held: Sequence[str]) -> str:
    return ", ".join(held) if held else "(none on record)"


def _who(shape: ShapeCount | None) -> str:
    if shape is None:
        return "—"
    noun = "person" if shape.volunteers == 1 else "people"
    return f"{shape.volunteers} {noun}, e.g. {shape.example}"


def _shape_section(
    number: int,
    group: ShapeGroup,
    locales: Sequence[str],
    rendered: Mapping[RenderedKey, RenderedMessage],
    campaign: Campaign,
    now: datetime,
) -> Markup:
    exposure, held, reached, by_locale = group
    heads = Markup("").join(Markup("<th>%s</th>") % locale_spec(loc).name for loc in locales)
    cells = []
    for locale in locales:
        shape = by_locale.get(locale)
        if shape is None:
            cells.append(
                Markup('<td lang="%s"><p class="nobody">Nobody reading %s gets this version.</p>')
                % (locale, locale_spec(locale).name)
                + Markup("</td>")
            )
            continue
        message = rendered[(locale, exposure, held, reached)]
        cells.append(_cell(shape, message, campaign, now))
    return Markup(
        '<section class="shape" data-shape="%d">\n<h2>%d. %s · %s</h2>\n'
        '<table class="shape">\n<thead><tr>%s</tr></thead>\n<tbody><tr>%s</tr></tbody>\n'
        "</table>\n</section>\n"
    ) % (
        number,
        number,
        _exposure(exposure, reached),
        _held(held),
        heads,
        Markup("").join(cells),
    )


def composed_headers(
    campaign: Campaign, message: RenderedMessage, shape: ShapeCount, now: datetime
) -> list[tuple[str, str]]:
    """From, Reply-To and Subject as the message is composed for sending (not as the
    campaign file says), so the sheet shows what readers will see."""
    volunteer = placeholder_volunteer(shape.locale, shape.exposure, shape.data_held)
    try:
        data = compose_message(message, campaign, volunteer, date=now)
    except NotifierError as exc:
        return [("Cannot compose", str(exc).splitlines()[0])]
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    return [(name, str(parsed[name] or "")) for name in ("From", "Reply-To", "Subject")]


def _cell(shape: ShapeCount, message: RenderedMessage, campaign: Campaign, now: datetime) -> Markup:
    match = _BODY.search(message.html)
    # Safe: the HTML part as rendered, with names and every value already escaped.
    body = Markup(match.group(1) if match else message.html)  # noqa: S704
    headers = composed_headers(campaign, message, shape, now)
    header_lines = Markup("").join(
        Markup("<div><b>%s:</b> %s</div>") % (name, value) for name, value in headers
    )
    # For a follow-up, which wording the cell shows (its earlier notice reached them or not).
    wording = {None: "only", True: "earlier-notice-reached", False: "earlier-notice-not-received"}
    return Markup(
        '<td lang="%s" data-locale="%s" data-volunteers="%d" data-example="%s"'
        ' data-wording="%s">\n'
        '<p class="who"><span class="lang">%s:</span> %s</p>\n<div class="headers">%s</div>\n'
        '<div class="notice">%s</div>\n'
        "<details><summary>Plain-text part</summary><pre>%s</pre></details>\n</td>"
    ) % (
        shape.locale,
        shape.locale,
        shape.volunteers,
        shape.example,
        wording[shape.reached],
        locale_spec(shape.locale).name,
        _who(shape),
        header_lines,
        body,
        escape(message.text),
    )

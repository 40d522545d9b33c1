"""Renderers of the proof of notification: JSON, CSV and one self-contained HTML file.

They turn the facts `notifier.report` reads from the ledger (a `CampaignReport`, the
unreachable people, a person's history) into files for a regulator or a spreadsheet; they
read nothing themselves. The terminal tables are in `notifier.cli.report`.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

import jinja2
from markupsafe import Markup, escape

from notifier.errors import UnknownLocale
from notifier.ledger import Event
from notifier.locales import locale_spec
from notifier.message import MessageState, state_words
from notifier.outputs import csv_cell, csv_lines, csv_records, json_record_text, json_text
from notifier.owed_counts import OwedCounts
from notifier.report import (
    CampaignReport,
    Owed,
    OwedFigures,
    OwedPerson,
    RecipientOutcome,
    Timeline,
    UnreachablePerson,
    recipients_written,
)
from notifier.times import shown_time as shown_time
from notifier.volunteer import exposure_words

NOT_RECORDED = "not recorded"

REPORT_CSV_COLUMNS: tuple[str, ...] = (
    "volunteer_id",
    "email",
    "locale",
    "exposure",
    "state",
    "first_attempt_at",
    "final_at",
    "attempts",
    "smtp_reply",
    "queue_id",
    "diagnostic",
)
UNREACHABLE_CSV_COLUMNS: tuple[str, ...] = (
    "volunteer_id",
    "name",
    "email",
    "locale",
    "exposure",
    "postal_address",
    "reason",
    "detail",
    "campaign",
    "at",
    "import_file",
    "import_row",
)


def report_as_dict(report: CampaignReport) -> dict[str, Any]:
    """The whole report as one dict (every recipient in it): for a small campaign; a large
    one is written by report_json_pieces, a recipient at a time."""
    return _report_fields(
        report,
        [asdict(r) for r in report.recipients],
        [asdict(p) for p in report.owed.people] if report.owed else [],
    )


def _report_fields(report: CampaignReport, recipients: Any, owed_people: Any) -> dict[str, Any]:
    """The JSON document's fields, in their order, with the two lists that grow with the
    campaign (`recipients`, `owed_people`) as the caller gives them."""
    return {
        "campaign": report.campaign_id,
        "title": report.title,
        "follows": report.follows,
        "registered_at": report.registered_at,
        "generated_at": report.generated_at,
        "ledger": {"file": report.ledger_file, **asdict(report.ledger)},
        "ledger_head": report.ledger_head,
        "verification": asdict(report.verification),
        "templates_sha256": {
            "recorded": report.templates.recorded,
            "current": report.templates.current,
            "matches": report.templates.matches,
        },
        "total": report.total,
        "counts": dict(report.counts),
        "counts_by_locale": {k: dict(v) for k, v in report.counts_by_locale.items()},
        "counts_by_exposure": {k: dict(v) for k, v in report.counts_by_exposure.items()},
        "timeline": {
            "first_send_at": report.timeline.first_send_at,
            "last_send_at": report.timeline.last_send_at,
            "hours": [{"hour": b.hour, "counts": dict(b.counts)} for b in report.timeline.hours],
        },
        "recipients": recipients,
        "state_mismatches": list(report.state_mismatches),
        # Who the campaign is for now, and who of them is still owed its notice (and why).
        "audience": report.owed.audience if report.owed else None,
        "sent": report.owed.sent if report.owed else None,
        "owed": report.owed.count if report.owed else None,
        "owed_reasons": dict(report.owed.reasons) if report.owed else {},
        "owed_people": owed_people,
        # A send (or an import) that held the ledger as the report was made.
        "running": asdict(report.running) if report.running else None,
        # Test messages (to the sender): in no count or timeline above.
        "test_sends": [asdict(t) for t in report.test_sends],
        # Every roster row refused at an import, and whether that person is on the roster now.
        "rejected_rows": [{**asdict(row), "fixed": row.fixed} for row in report.rejected_rows],
    }


def report_as_json(report: CampaignReport) -> str:
    return "".join(report_json_pieces(report))


def report_json_pieces(report: CampaignReport) -> Iterator[str]:
    """report_as_json() a piece at a time, the recipients and the people owed written as
    they are read from the ledger: the same text, in memory that does not grow with the
    campaign."""
    marker = f"notifier-stream-{uuid.uuid4().hex}"
    owes = report.owed
    lists: dict[str, Iterable[str]] = {
        f"{marker}-recipients": recipients_written(report, recipients_json_pieces),
        # Nobody owed: the audience is not read again to find nobody.
        f"{marker}-owed": _json_list_pieces(
            (_record(p) for p in owes.people) if owes and owes.count else (), depth=1
        ),
    }
    skeleton = json_text(_report_fields(report, *(f"{marker}-{k}" for k in ("recipients", "owed"))))
    # json_text writes the markers as strings at the top level of the document: each
    # becomes its list, an item at a time, indented as json_text indents a nested list.
    for part in re.split(rf'"({re.escape(marker)}-\w+)"', skeleton):
        yield from lists.get(part, (part,))
    yield "\n"


def recipients_json_pieces(recipients: Iterable[RecipientOutcome], _head: str) -> Iterator[str]:
    """The JSON report's list of recipients, as it stands in the document (a
    notifier.report.RecipientsWriter)."""
    return _json_list_pieces((_record(r) for r in recipients), depth=1)


def _record(row: RecipientOutcome | OwedPerson) -> dict[str, Any]:
    """asdict() of a flat record, without its deep copy (a million of them are written):
    a dataclass's instance dictionary holds its fields, in their order."""
    return dict(vars(row))


def _json_list_pieces(items: Iterable[Mapping[str, Any]], *, depth: int) -> Iterator[str]:
    """A JSON list of flat records as json_text(indent=2) writes it `depth` levels deep,
    an item at a time."""
    inner = "\n" + "  " * (depth + 1)
    first = True
    for item in items:
        yield ("[" if first else ",") + inner + json_record_text(item, depth=depth + 1)
        first = False
    yield "[]" if first else "\n" + "  " * depth + "]"


def report_as_csv(report: CampaignReport) -> str:
    return "".join(report_csv_lines(report))


def report_csv_lines(report: CampaignReport) -> Iterator[str]:
    """The report's CSV a line at a time, one per recipient, as they are read."""
    yield from csv_records([(*REPORT_CSV_COLUMNS, "ledger_head")])
    yield from recipients_written(report, recipients_csv_lines)


def recipients_csv_lines(recipients: Iterable[RecipientOutcome], head: str) -> Iterator[str]:
    """The CSV report's lines but its header (a notifier.report.RecipientsWriter). Every
    row carries the ledger's head (SEQ:HASH), so a copy of the sheet is an anchor."""
    head_cell = csv_cell(head)
    return csv_records(
        [*(csv_cell(getattr(r, column)) for column in REPORT_CSV_COLUMNS), head_cell]
        for r in recipients
    )


def _unreachable_record(p: UnreachablePerson) -> dict[str, Any]:
    return {**{k: v for k, v in asdict(p).items() if k != "campaign_id"}, "campaign": p.campaign_id}


def unreachable_as_dicts(people: Iterable[UnreachablePerson]) -> list[dict[str, Any]]:
    return [_unreachable_record(p) for p in people]


def unreachable_as_json(people: Iterable[UnreachablePerson]) -> str:
    return "".join(unreachable_json_pieces(people))


def unreachable_json_pieces(people: Iterable[UnreachablePerson]) -> Iterator[str]:
    """unreachable_as_json() a person at a time, as they are read."""
    yield from _json_list_pieces((_unreachable_record(p) for p in people), depth=0)
    yield "\n"


def unreachable_as_csv(people: Iterable[UnreachablePerson]) -> str:
    return "".join(unreachable_csv_lines(people))


def unreachable_csv_lines(people: Iterable[UnreachablePerson]) -> Iterator[str]:
    """unreachable_as_csv() a line at a time, as the people are read."""
    return csv_lines(
        UNREACHABLE_CSV_COLUMNS,
        ([_unreachable_record(p)[column] for column in UNREACHABLE_CSV_COLUMNS] for p in people),
    )


def history_as_dicts(events: Iterable[Event]) -> list[dict[str, Any]]:
    return [asdict(e) for e in events]


_HTML_ENV = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
)

# One self-contained file: inline CSS, no scripts, no external resources, no links, so
# it can be attached to a regulator's file and read the same way in ten years.
_HTML_TEMPLATE = _HTML_ENV.from_string(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Notification report: {{ r.campaign_id }}</title>
<style>
/* Fits a 1,000 px window with no sideways scrolling: tables take the page's width and
   long cells (addresses, replies, hashes) wrap inside them instead of widening them. */
html { -webkit-text-size-adjust: 100%; }
body { font-family: Georgia, "Times New Roman", serif; margin: 1.5em; color: #111; max-width: 100%; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; max-width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.4em; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; word-break: normal; }
/* Headings, numbers and times wrap between words only, never inside one; the tables are
   laid out by their content, so a column is at least as wide as its longest heading word.
   Addresses wrap after their @ and dots (breakable()), not at a hyphen. */
th, .time, .nw { overflow-wrap: normal; }
td.n, .nw { white-space: nowrap; }
th { background: #eee; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
table.facts { width: 100%; table-layout: fixed; }
table.facts th { width: 16em; }
table.recipients, table.owed, table.rows { width: 100%; font-size: 0.8em; }
/* The recipients' columns keep their widths whatever a cell holds (a long reply wraps
   inside its cell); each is wide enough for the longest word of its heading. */
table.recipients { table-layout: fixed; }
table.recipients col.id { width: 10%; } table.recipients col.addr { width: 16%; }
table.recipients col.who { width: 12%; } table.recipients col.state { width: 14%; }
table.recipients col.time { width: 10%; } table.recipients col.n { width: 5%; }
table.recipients col.reply { width: 12%; } table.recipients col.diag { width: 11%; }
table.timeline { font-size: 0.85em; }
.time { white-space: nowrap; }
table.recipients .time, table.rows .time { white-space: normal; }
code { font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 0.85em; word-break: break-all; }
.ok { color: #0a5d00; font-weight: bold; }
.bad { color: #a00000; font-weight: bold; }
.apart { border-left: 4px solid #a00000; padding-left: 0.6em; }
.small { color: #444; font-size: 0.85em; }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { margin: 0; font-size: 9pt; color: #000; }
  h2 { break-after: avoid; page-break-after: avoid; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  th { background: none; }
  .ok, .bad { color: #000; }
}
</style>
</head>
<body>
<h1>Notification report: {{ r.campaign_id }}</h1>
{% if r.running %}
<p class="apart"><strong>A {{ r.running.command }} was running as this report was made</strong>
({{ r.running.describe(zone) }}): its figures are a moment of a run still going on. Make the
report again once it has ended.</p>
{% endif %}
<p>{{ r.title }}</p>
<p class="small">All times are shown to the second in {{ zone }}.</p>
<table class="facts">
<tr><th>Campaign</th><td>{{ r.campaign_id }}</td></tr>
{% if r.follows %}<tr><th>Follows up</th><td>{{ r.follows }}</td></tr>{% endif %}
<tr><th>Registered at</th><td>{{ when(r.registered_at) or "not recorded" }}</td></tr>
<tr><th>Report generated at</th><td>{{ when(r.generated_at) }}</td></tr>
{% if r.owed %}
<tr><th>Who it is for now (audience)</th><td>{{ r.owed.audience }}</td></tr>
<tr><th>Sent: a mail server accepted it</th><td>{{ r.owed.sent }}</td></tr>
<tr><th>Still owed the notice</th><td>{% if r.owed.count %}<span class="bad">{{ r.owed.count }}</span> (see "Still owed" below){% else %}none: everyone it is for was sent it{% endif %}</td></tr>
{% endif %}
<tr><th>Messages</th><td>{{ r.total }}</td></tr>
<tr><th>Roster rows refused at import</th><td>{% if r.rejected_rows %}{{ r.rejected_rows|length }}: {{ unfixed }} of them not on the roster since, never e-mailed (see "Rows refused at import" below){% else %}none{% endif %}</td></tr>
<tr><th>Test messages (to the sender, not counted here)</th><td>{{ r.test_sends|length or "none" }}</td></tr>
<tr><th>First send attempt</th><td>{{ when(r.timeline.first_send_at) or "none" }}</td></tr>
<tr><th>Last send attempt</th><td>{{ when(r.timeline.last_send_at) or "none" }}</td></tr>
</table>

<h2>Integrity of the record</h2>
<table class="facts">
<tr><th>Ledger verification</th><td>
{% if r.verification.ok %}
<span class="ok">PASSED</span>: {{ r.verification.events }} events, hash chain intact
{% else %}
<span class="bad">FAILED</span>: {{ r.verification.reason }}
(first bad event: {{ r.verification.first_bad_seq }}; {{ r.verification.events }} events before it are intact)
{% endif %}
</td></tr>
{% if r.verification.warning %}
<tr><th>Warning</th><td>{{ r.verification.warning }}</td></tr>
{% endif %}
<tr><th>Head hash (last intact event)</th><td><code>{{ r.verification.head }}</code></td></tr>
<tr><th>Ledger head (anchor: notifier ledger verify <span class="nw">--anchor</span>)</th><td><code>{{ r.ledger_head }}</code></td></tr>
<tr><th>Ledger file</th><td>{{ r.ledger_file }}</td></tr>
<tr><th>SHA-256 of the ledger file</th><td><code>{{ r.ledger.sha256 }}</code>
{% if r.ledger.note %}<br>{{ r.ledger.note }}{% endif %}</td></tr>
<tr><th>SHA-256 of the templates used</th><td><code>{{ r.templates.recorded or not_recorded }}</code>
{% if r.templates.current %}<br>templates now: <code>{{ r.templates.current }}</code>
{% if r.templates.matches %}(unchanged){% elif r.templates.matches is not none %}<span class="bad">(changed since the campaign was registered)</span>{% endif %}
{% endif %}</td></tr>
{% if r.state_mismatches %}
<tr><th>Message table</th><td><span class="bad">{{ r.state_mismatches|length }} message{{ "" if r.state_mismatches|length == 1 else "s" }}</span>
{{ "has" if r.state_mismatches|length == 1 else "have" }} a stored state that differs from their recorded events; the states below come from the events:
{% for m in r.state_mismatches[:limit] %}<code>{{ m }}</code>{% if not loop.last %}, {% endif %}{% endfor %}{% if r.state_mismatches|length > limit %} (the first {{ limit }}; every one in the JSON report's state_mismatches){% endif %}</td></tr>
{% endif %}
</table>
<p>How to check this later: every event in the ledger carries the hash of the one before
it, so <code>notifier ledger verify</code> on this ledger file finds any event edited,
deleted, inserted or reordered since, and ends at the head hash above. The ledger file's
SHA-256 (e.g. <code>sha256sum {{ r.ledger_file }}</code>) equals the value above for as long
as nothing has been written to the ledger since this report was made.</p>

<h2>Where each part is</h2>
<p>{% if summary %}This report is the summary of a large campaign: it counts its
{{ r.total }} recipients but does not list them one by one{% if r.owed and r.owed.count > limit %}, and lists the first {{ limit }} of the people still owed the notice{% endif %}.
{% else %}This report lists every recipient below.
{% endif %}
Each recipient's outcome, with the exact times: <code class="nw">notifier report {{ r.campaign_id }} --format csv</code>
(one row per recipient) or <code class="nw">--format json</code> (everything in this report, every
person listed); the people no notice reached, with their postal addresses: <code class="nw">notifier export unreachable</code>.
A CSV or JSON report made from this same ledger names the same ledger head as this one,
<code>{{ r.ledger_head }}</code> (the <code>ledger_head</code> column of every CSV row, the
<code>ledger_head</code> field of the JSON), and the JSON the same SHA-256 of the ledger file: the
parts belong together when they match.</p>

<h2>Outcome by state</h2>
<table>
<thead><tr><th>What happened</th><th class="n">Recipients</th></tr></thead>
{% for state, n in r.counts.items() %}
<tr><td>{{ words(state) }}</td><td class="n">{{ n }}</td></tr>
{% endfor %}
<tr><th>Total</th><th class="n">{{ r.total }}</th></tr>
</table>
{% if blocked %}
<p class="apart"><strong>{{ blocked }} message{{ "" if blocked == 1 else "s" }} refused for policy or reputation (blocked).</strong>
Our mail was refused; the addresses are fine and were not suppressed. This needs action by
the sender (reputation, SPF, DKIM, content), then: <code>notifier resend {{ r.campaign_id }} --status blocked --yes</code></p>
{% endif %}
{% for title, groups, named in (("By language", r.counts_by_locale, language), ("By exposure", r.counts_by_exposure, exposure_words)) %}

<h2>{{ title }}</h2>
<table>
<thead><tr><th></th>{% for state in r.states %}<th class="n">{{ words(state) }}</th>{% endfor %}<th class="n">total</th></tr></thead>
{% for key, counts in groups.items() %}
<tr><th>{{ named(key) }}</th>{% for state in r.states %}<td class="n">{{ counts[state] }}</td>{% endfor %}<td class="n">{{ counts.values()|sum }}</td></tr>
{% endfor %}
</table>
{% endfor %}

<h2>Timeline (events per hour, {{ zone }})</h2>
<p class="small">The campaign's own events; test messages are listed apart, below.</p>
<table class="timeline">
<thead><tr><th>Hour starting</th>{% for kind in kinds %}<th class="n">{{ kind_words(kind) }}</th>{% endfor %}</tr></thead>
{% for bucket in r.timeline.hours %}
<tr><td class="time">{{ when(bucket.hour) }}</td>{% for kind in kinds %}<td class="n">{{ bucket.counts.get(kind, 0) }}</td>{% endfor %}</tr>
{% endfor %}
</table>

{% if r.owed and r.owed.count %}
<h2>Still owed the notice</h2>
<p>People the campaign is for who have not been sent it (no server has accepted it, or a
report since said it failed), and why.</p>
<table>
<thead><tr><th>Why</th><th class="n">People</th></tr></thead>
{% for reason, n in r.owed.reasons.items() %}
<tr><td>{{ reason }}</td><td class="n">{{ n }}</td></tr>
{% endfor %}
</table>
<table class="owed">
<thead><tr><th>Volunteer</th><th>Address</th><th>Language, exposure</th><th>Why</th></tr></thead>
{% for p in owed_shown %}
<tr><td>{{ p.volunteer_id }}<br>{{ p.name }}</td><td>{{ breakable(p.email) }}</td><td>{{ language(p.locale) }}, {{ exposure_words(p.exposure) }}</td><td>{{ p.reason }}</td></tr>
{% endfor %}
</table>
{% if r.owed.count > limit %}
<p class="apart">The first {{ limit }} of the {{ r.owed.count }} people still owed the notice; every one is in
<code class="nw">notifier report {{ r.campaign_id }} --format json</code> (owed_people).</p>
{% endif %}
{% endif %}

<h2>Recipients</h2>
{% if summary %}
<p>The {{ r.total }} recipients are counted above, by state, language and exposure; each one's
outcome is in <code class="nw">notifier report {{ r.campaign_id }} --format csv</code> and
<code class="nw">--format json</code>, made from the ledger head <code>{{ r.ledger_head }}</code>
(see "Where each part is").</p>
{% else %}
<table class="recipients">
<colgroup><col class="id"><col class="addr"><col class="who"><col class="state"><col class="time"><col class="time"><col class="n"><col class="reply"><col class="diag"></colgroup>
<thead><tr><th>Volunteer</th><th>Address</th><th>Language, exposure</th><th>Final state</th><th>First attempt</th><th>Final state at</th><th class="n">Tries</th><th>Server reply (queue id), latest attempt</th><th>Bounce diagnostic, latest attempt</th></tr></thead>
{% for p in r.recipients %}
<tr><td>{{ p.volunteer_id }}<br>{{ p.name }}</td><td>{{ breakable(p.email) }}</td><td>{{ language(p.locale) }}, {{ exposure_words(p.exposure) }}</td><td>{{ words(p.state) }}</td><td class="time">{{ when(p.first_attempt_at) }}</td><td class="time">{{ when(p.final_at) }}</td><td class="n">{{ p.attempts }}</td><td>{{ p.smtp_reply }}{% if p.queue_id %} ({{ p.queue_id }}){% endif %}</td><td>{{ p.diagnostic }}</td></tr>
{% endfor %}
</table>
<p>Times are in {{ zone }}, to the second. States and times are taken from the ledger's
hash-chained events; the exact times (with microseconds, UTC) are in the report's CSV and JSON.</p>
{% endif %}

<h2>Rows refused at import</h2>
{% if r.rejected_rows %}
<p>Rows of the roster files that were refused when they were imported: nobody was e-mailed
from these rows. A row is fixed when the same person (by volunteer id, or by address where
the row had no id) is on the roster now; the others are on the postal worklist
(<code class="nw">notifier export unreachable</code>). Times in {{ zone }}.</p>
<table class="rows">
<thead><tr><th>File, imported at</th><th class="n">Row</th><th>Volunteer</th><th>Address</th><th>Why it was refused</th><th>Fixed by a later import?</th></tr></thead>
{% for row in r.rejected_rows[:limit] %}
<tr><td>{{ row.import_file }}<br><span class="time">{{ when(row.imported_at) }}</span></td><td class="n">{{ row.row }}</td><td>{{ row.volunteer_id }}{% if row.name %}<br>{{ row.name }}{% endif %}</td><td>{{ breakable(row.email) }}</td><td>{{ row.reason }}</td><td>{% if row.fixed %}yes: on the roster as {{ row.on_roster_as }}{% else %}<span class="bad">no</span>: <span class="nw">never e-mailed</span>{% endif %}</td></tr>
{% endfor %}
</table>
{% if r.rejected_rows|length > limit %}
<p class="apart">The first {{ limit }} of the {{ r.rejected_rows|length }} rows refused; every one is in
<code class="nw">notifier report {{ r.campaign_id }} --format json</code> (rejected_rows) and
<code class="nw">notifier roster rejects</code>.</p>
{% endif %}
{% else %}
<p>No roster row was refused at any import.</p>
{% endif %}

<h2>Test messages</h2>
{% if r.test_sends %}
<p>Messages of this campaign sent to the sender's own test address before the real send
(<code class="nw">notifier send {{ r.campaign_id }} --test-to</code>). They went to nobody
on the roster and are not counted anywhere above. Times in {{ zone }}.</p>
<table class="rows">
<thead><tr><th>At</th><th>Sent to</th><th>Showing the message of</th><th>Outcome</th></tr></thead>
{% for t in r.test_sends[:limit] %}
<tr><td class="time">{{ when(t.at) }}</td><td>{{ breakable(t.to) }}</td><td>{{ t.shown_as }}</td><td>{% if t.accepted %}accepted by the mail server{% else %}<span class="bad">refused</span>{% endif %}{% if t.reply %}: {{ t.reply }}{% endif %}</td></tr>
{% endfor %}
</table>
{% if r.test_sends|length > limit %}
<p>The first {{ limit }} of the {{ r.test_sends|length }} test messages; every one is in
<code class="nw">notifier report {{ r.campaign_id }} --format json</code> (test_sends).</p>
{% endif %}
{% else %}
<p>No test messages were sent for this campaign.</p>
{% endif %}
</body>
</html>
"""  # noqa: E501 (HTML rows read better unbroken)
)


# The order of the timeline's columns: the order things happen in.
_KIND_ORDER: tuple[str, ...] = (
    "campaign_registered",
    "queued",
    *tuple(MessageState),
    "address_suppressed",
)


def timeline_kinds(timeline: Timeline) -> list[str]:
    """The event kinds in a timeline, in lifecycle order, unknown ones last."""
    present = {kind for bucket in timeline.hours for kind in bucket.counts}
    return [k for k in _KIND_ORDER if k in present] + sorted(present - set(_KIND_ORDER))


def owed_lines(owed: Owed | OwedFigures | OwedCounts) -> list[str]:
    """Who a campaign is for, was sent and still owes, and why, for a terminal."""
    complete = "" if owed.count else " (everyone in it has been sent the notice)"
    return [
        f"Audience now: {owed.audience}; sent: {owed.sent}; still owed: {owed.count}{complete}",
        *(f"  {n:>6}  {reason}" for reason, n in owed.reasons.items()),
    ]


def kind_words(kind: str) -> str:
    """An event kind as a timeline column: a message state in its short words."""
    try:
        return state_words(MessageState(kind)).split(":")[0]
    except ValueError:
        return kind.replace("_", " ")


# Up to this many recipients the HTML report lists each one; above, it is a summary a
# browser opens at once (a million rows would be a page of hundreds of megabytes), and
# the recipients are in the CSV and JSON reports.
HTML_LISTS_UP_TO = 5000
# The most people (still owed the notice, rows refused, test messages) the page lists in
# any one table; the JSON report has every one.
HTML_LIST_LIMIT = 1000


def report_as_html(
    report: CampaignReport, *, time_zone: str = "UTC", lists_up_to: int | None = None
) -> str:
    return "".join(report_html_pieces(report, time_zone=time_zone, lists_up_to=lists_up_to))


def report_html_pieces(
    report: CampaignReport,
    *,
    time_zone: str = "UTC",
    lists_up_to: int | None = None,
    limit: int | None = None,
) -> Iterator[str]:
    """The HTML report a piece at a time: every recipient listed when there are at most
    `lists_up_to` (HTML_LISTS_UP_TO), else the summary; no table longer than `limit`
    (HTML_LIST_LIMIT) rows. Its size does not grow with the campaign beyond that."""
    up_to = HTML_LISTS_UP_TO if lists_up_to is None else lists_up_to
    limit = HTML_LIST_LIMIT if limit is None else limit
    owed_people = report.owed.people if report.owed and report.owed.count else ()
    return _HTML_TEMPLATE.generate(
        r=report,
        summary=report.total > up_to,
        limit=limit,
        owed_shown=itertools.islice(owed_people, limit),
        kinds=timeline_kinds(report.timeline),
        not_recorded=NOT_RECORDED,
        zone=time_zone,
        when=lambda at: shown_time(at, time_zone),
        words=state_words,
        kind_words=kind_words,
        blocked=report.counts.get(MessageState.BLOCKED, 0),
        breakable=breakable,
        language=language_words,
        exposure_words=exposure_words,
        unfixed=sum(1 for row in report.rejected_rows if not row.fixed),
    )


# Longer stretches of an address may still wrap inside, rather than widen the page.
_UNBROKEN_MAX = 20


def breakable(address: str) -> Markup:
    """An address that wraps after its `@` and dots, not at a hyphen inside a part
    ("volunteers-/ja@"): each part is kept whole, unless longer than _UNBROKEN_MAX."""
    parts = [part for part in re.split(r"(?<=[@.])", address) if part]
    return Markup("<wbr>").join(
        Markup('<span class="nw">%s</span>') % part if len(part) <= _UNBROKEN_MAX else escape(part)
        for part in parts
    )


def language_words(locale: str) -> str:
    """A locale as people name it ("English"); an unknown one as it is."""
    try:
        return locale_spec(locale).name
    except UnknownLocale:
        return locale

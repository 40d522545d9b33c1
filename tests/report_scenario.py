"""One scenario for the report tests: two campaigns with every kind of outcome.

The ledger is written by hand, as a history with fixed times: rows first (volunteers,
campaigns, messages, suppressions, imports, as sending and importing would have left
them), then hash-chained events at those times, through the ledger package's own chain
(no public API appends a history at chosen times), then adoption events for the rows,
so the figures the tests assert are exact and the ledger verifies.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger, chain, volunteer_to_row
from notifier.ledger.upgrade import adoptions
from notifier.volunteer import Volunteer

C1 = "2020-03-breach"
C2 = "2020-04-update"
TEMPLATES_SHA = "ab" * 32
EVIL_NAME = "<script>alert(1)</script>"


@dataclass(frozen=True)
class Person:
    vid: str
    family: str
    given: str
    email: str
    locale: str
    exposure: str
    postal: str = ""


PEOPLE = (
    Person("v01", "Dane", "Alice", "alice@example.org", "en", "published"),
    Person("v02", "鈴木", "一郎", "suzuki@example.jp", "ja", "screened", "東京都千代田区1-1"),
    Person("v03", EVIL_NAME, "Mallory", "mallory@example.com", "en", "screened", "1 Evil Way"),
    Person("v04", "Gray", "Bob", "bob@example.org", "en", "database_only"),
    Person("v05", "田中", "花子", "tanaka@example.jp", "ja", "database_only", "大阪府大阪市2-2"),
    Person("v06", "Irwin", "Carol", "carol@example.org", "en", "published", "6 High St, London"),
    Person("v07", "Jones", "Dan", "dan@example.org", "en", "screened"),
    Person("v08", "佐藤", "健", "sato@example.jp", "ja", "published"),
    Person("v09", "Green", "Eve", "eve@example.org", "en", "database_only"),
    Person("v10", "山本", "愛", "yamamoto@example.jp", "ja", "screened", "京都府京都市3-3"),
)


def mid(campaign: str, vid: str) -> str:
    return f"<{campaign}.{vid}@example.org>"


def at(hhmm: str, day: str = "2020-04-01") -> str:
    return f"{day}T{hhmm}:00.000000+00:00"


def append(ledger: Ledger, drafts: list[EventDraft], when: str) -> None:
    """Events written into the chain at a chosen time, as a hand-made history."""
    with ledger.transaction():
        chain.append(ledger.conn, drafts, when)


class Builder:
    """Writes one scenario into a ledger: rows first, then events at fixed times."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def volunteers(self) -> None:
        rows = [
            volunteer_to_row(
                Volunteer(
                    volunteer_id=p.vid,
                    email=p.email,
                    email_ascii=p.email,
                    family_name=p.family,
                    given_name=p.given,
                    locale=p.locale,
                    exposure=p.exposure,
                    data_held=("id_documents",),
                    postal_address=p.postal,
                )
            )
            for p in PEOPLE
        ]
        self.ledger.db.table("volunteers").insert_all(rows)

    def campaign(self, campaign_id: str, vids: list[str], templates_sha: str | None) -> None:
        self.ledger.db.table("campaigns").insert(
            {
                "campaign_id": campaign_id,
                "title": f"Notice {campaign_id}",
                "follows": C1 if campaign_id == C2 else None,
                "definition": "{}",
                "templates_sha256": templates_sha,
                "registered_at": at("09:55"),
            }
        )
        self.ledger.db.table("messages").insert_all(
            {
                "message_id": mid(campaign_id, vid),
                "campaign_id": campaign_id,
                "volunteer_id": vid,
                "verp_token": f"tok-{campaign_id}-{vid}",
                "state": "pending",
                "attempts": 0,
            }
            for vid in vids
        )

    def event(
        self,
        when: str,
        kind: str,
        vid: str,
        campaign: str = C1,
        data: dict[str, Any] | None = None,
        *,
        moves: bool = True,
        name_volunteer: bool = True,
    ) -> None:
        state = ("pending" if kind == "queued" else kind) if moves else None
        data = dict(data or {})
        if state is not None and kind in ("delivered", "bounced_hard", "bounced_soft"):
            data["moved_to"] = state  # a report's event says where it moved its message
        append(
            self.ledger,
            [
                EventDraft(
                    EventKind(kind),
                    campaign_id=campaign,
                    volunteer_id=vid if name_volunteer else None,
                    message_id=mid(campaign, vid),
                    data=data,
                )
            ],
            when,
        )
        if state is not None:
            self.ledger.db.execute(
                "UPDATE messages SET state = ?, updated_at = ? WHERE message_id = ?",
                [state, when, mid(campaign, vid)],
            )

    def sent(self, when: str, vid: str, queue_id: str, attempt: int = 1, c: str = C1) -> None:
        self.event(when, "sending", vid, c, {"attempt": attempt})
        reply = f"250 2.0.0 Ok: queued as {queue_id}"
        data = {"reply": reply, "code": 250, "queue_id": queue_id, "attempt": attempt}
        self.event(when, "sent", vid, c, data)

    def refused(self, when: str, vid: str, kind: str, reply: str, attempt: int) -> None:
        self.event(when, "sending", vid, C1, {"attempt": attempt})
        code = int(reply[:3])
        self.event(when, kind, vid, C1, {"reply": reply, "code": code, "attempt": attempt})

    def bounce(self, when: str, kind: str, vid: str, diagnostic: str, c: str = C1) -> None:
        person = next(p for p in PEOPLE if p.vid == vid)
        data = {
            "status": "5.1.1" if kind == "bounced_hard" else "4.2.2",
            "action": "failed" if kind == "bounced_hard" else "delayed",
            "diagnostic": diagnostic,
            "recipient": person.email,
            "source": "bounces/new/1",
        }
        self.event(when, kind, vid, c, data)


HARD_DIAG = "smtp; 550 5.1.1 <mallory@example.com>: Recipient address rejected: User unknown"
SOFT_DIAG = "smtp; 452 4.2.2 Mailbox full"
PERM_REPLY = "550 5.7.1 Relaying denied"
TEMP_REPLY = "451 4.7.1 Try again later"


def build(ledger: Ledger) -> None:
    """Campaign 1 to all ten, with every kind of outcome; campaign 2 to three of them."""
    b = Builder(ledger)
    b.volunteers()
    b.campaign(C1, [p.vid for p in PEOPLE], TEMPLATES_SHA)
    b.campaign(C2, ["v02", "v03", "v06"], None)
    for p in PEOPLE:
        b.event(at("09:58"), "queued", p.vid)
    b.sent(at("10:00"), "v01", "AAA1")
    b.sent(at("10:01"), "v02", "AAA2")
    b.sent(at("10:02"), "v03", "AAA3")
    b.sent(at("10:03"), "v04", "AAA4")
    b.refused(at("10:04"), "v05", "failed_permanent", PERM_REPLY, 1)
    b.refused(at("10:05"), "v06", "deferred", TEMP_REPLY, 1)
    b.refused(at("10:06"), "v08", "deferred", TEMP_REPLY, 1)
    b.event(at("10:07"), "sending", "v07", data={"attempt": 1})
    b.event(at("10:08"), "uncertain", "v07", data={"attempt": 1})
    b.sent(at("10:09"), "v10", "AAA10")
    b.refused(at("11:05"), "v06", "deferred", TEMP_REPLY, 2)
    b.sent(at("11:06"), "v08", "AAA8", attempt=2)
    b.refused(at("11:30"), "v06", "failed_temporary", TEMP_REPLY, 3)
    # Delivery reports. The one for v01 names only the message, as a report matched by
    # Message-ID may; it is still part of v01's history.
    b.event(at("12:00"), "delivered", "v01", data={"status": "2.0.0"}, name_volunteer=False)
    b.bounce(at("12:10"), "bounced_hard", "v03", HARD_DIAG)
    append(
        ledger,
        [
            EventDraft(
                EventKind.ADDRESS_SUPPRESSED,
                campaign_id=C1,
                volunteer_id="v03",
                message_id=mid(C1, "v03"),
                data={"email": "mallory@example.com", "reason": "bounced_hard 5.1.1"},
            )
        ],
        at("12:10"),
    )
    seq = ledger.count("events")
    suppressions: list[dict[str, Any]] = [
        {
            "email": "mallory@example.com",
            "reason": "bounced_hard 5.1.1",
            "at": at("12:10"),
            "event_seq": seq,
        },
        # Suppressed by hand, with no event: v10 was sent campaign 1 before, but no
        # later notice can reach them.
        {"email": "yamamoto@example.jp", "reason": "asked by phone", "at": at("13:00")},
    ]
    ledger.db.table("suppressions").insert_all(suppressions)
    b.bounce(at("12:20"), "bounced_soft", "v04", SOFT_DIAG)
    # Campaign 2, three weeks later.
    day = "2020-04-29"
    for vid in ("v02", "v03", "v06"):
        b.event(at("09:00", day), "queued", vid, C2)
    b.sent(at("09:01", day), "v02", "BBB2", c=C2)
    b.event(at("09:01", day), "suppressed", "v03", C2, {"reason": "address suppressed"})
    b.sent(at("09:02", day), "v06", "BBB6", c=C2)
    b.bounce(at("09:30", day), "bounced_hard", "v02", "smtp; 550 5.1.1 mailbox gone", c=C2)
    # Import history: a rejected row stays listed until its person is on the roster.
    imports = ledger.db.table("imports")
    for import_id, name in ((1, "old.csv"), (2, "volunteers.csv")):
        imports.insert(
            {
                "id": import_id,
                "file_name": name,
                "sha256": "cd" * 32,
                "imported_at": at("08:00") if import_id == 1 else at("09:00"),
                "rows_total": 14,
                "rows_valid": 10,
                "rows_rejected": 3,
            }
        )
    ledger.db.table("rejected_rows").insert_all(
        [
            {
                "import_id": 1,
                "row": 3,
                "column": "email",
                "value": "old@",
                "reason": "bad",
                "field": "email",
            },
            {
                "import_id": 2,
                "row": 7,
                "column": "メールアドレス",  # the header as a mapped file spells it
                "value": "kato at example.jp",
                "reason": "not a valid address",
                "field": "email",
            },
            {
                "import_id": 2,
                "row": 7,
                "column": "exposure",
                "value": "maybe",
                "reason": "unknown exposure",
                "field": "exposure",
            },
            {
                "import_id": 2,
                "row": 9,
                "column": "email",
                "value": "ALICE@example.org",
                "reason": "duplicate of row 2",
                "field": "email",
            },
            {
                "import_id": 2,
                "row": 12,
                "column": "family_name",
                "value": "",
                "reason": "empty",
                "field": "family_name",
            },
        ]
    )
    # ... and the events an import writes for them, with who each row was about.
    who = {
        (1, 3): {"email": "old@", "family_name": "Old"},
        (2, 7): {"email": "kato at example.jp", "family_name": "加藤", "given_name": "学"},
        (2, 9): {"email": "ALICE@example.org", "family_name": "Dane", "given_name": "Alice"},
        (2, 12): {"volunteer_id": "v12", "email": "lee@example.org", "postal_address": "12 Row St"},
    }
    for import_id, name in ((1, "old.csv"), (2, "volunteers.csv")):
        when = at("08:00") if import_id == 1 else at("09:00")
        rows = [r for r in ledger.db.table("rejected_rows").rows if r["import_id"] == import_id]
        append(
            ledger,
            [
                EventDraft(EventKind.ROSTER_IMPORTED, data={"import_id": import_id, "file": name}),
                *(
                    EventDraft(
                        EventKind.ROW_REJECTED,
                        data={
                            "import_id": import_id,
                            "row": r["row"],
                            "column": r["column"],
                            "value": r["value"],
                            "reason": r["reason"],
                            "field": r["field"],
                            "who": who[import_id, r["row"]],
                        },
                    )
                    for r in rows
                ),
            ],
            when,
        )
    adopt_rows(ledger)


def adopt_rows(ledger: Ledger) -> None:
    """The rows written by hand above, vouched for by events (as `ledger upgrade` does for
    an old ledger), so the scenario's ledger verifies."""
    # The rejected rows already have their `row_rejected` events (above), as an import
    # writes them; the other tables' rows are adopted.
    drafts = [d for d in adoptions(ledger.conn) if d.kind != "rejected_row_adopted"]
    append(ledger, drafts, at("23:59", "2020-04-29"))


def by_vid(rows: Any) -> dict[str, Any]:
    return {r.volunteer_id: r for r in rows}


def tamper(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Edit the file behind notifier's back, as someone with sqlite3 would."""
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()

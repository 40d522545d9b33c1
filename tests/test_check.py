"""`notifier check`: passes on the shipped campaigns against a realistic roster, and fails
with a clear message, once per problem, on deliberately broken campaigns."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Notifier, with_contact, write_org_config
from smtp_helpers import add_volunteers, send

from notifier.campaign import TEMPLATES_DIR, load_campaign
from notifier.catalogs import LOCALE_DIR
from notifier.check import REQUIRED_ELEMENTS, CheckReport, check_campaign
from notifier.ledger import Ledger, volunteer_to_row
from notifier.sink import Sink
from notifier.volunteer import DATA_HELD, EXPOSURES, LOCALES, Volunteer

FAMILY = {"en": ["Smith", "O'Neill", "Dąbrowski", "Nguyen"], "ja": ["鈴木", "田中", "佐藤"]}
# The published records were of surnames beginning with D, G, I or J (the 2020 notice);
# a Japanese name's Latin spelling is in its own column.
PUBLISHED_FAMILY = {"en": ["Davies", "D'Arcy", "Gómez", "Jones"], "ja": ["伊藤", "井上"]}
LATIN = {"伊藤": "Ito", "井上": "Inoue", "鈴木": "Suzuki", "田中": "Tanaka", "佐藤": "Sato"}
GIVEN = {"en": ["Jo", "Mary-Ann", "", "Sam"], "ja": ["一郎", "花子", "健"]}
KINDS: list[tuple[str, ...]] = [
    (),
    ("id_documents", "photo"),
    ("id_documents", "photo", "health_questionnaire", "consent_form", "test_results"),
    DATA_HELD,
    ("consent_form", "gp_information"),
]


def roster(size: int = 120) -> list[Volunteer]:
    """Every locale × exposure × kind of data held, with a variety of names."""
    people = []
    for n in range(size):
        locale = LOCALES[n % 2]
        exposure = EXPOSURES[(n // 2) % 3]
        email = f"volunteer{n}@example.com"
        families = PUBLISHED_FAMILY if exposure == "published" else FAMILY
        family = families[locale][n % len(families[locale])]
        people.append(
            Volunteer(
                volunteer_id=f"HMR-{n:04d}",
                email=email,
                email_ascii=email,
                family_name=family,
                given_name=GIVEN[locale][n % len(GIVEN[locale])],
                locale=locale,
                exposure=exposure,
                data_held=() if exposure == "database_only" else KINDS[n % len(KINDS)],
                extra={"family_name_latin": LATIN[family]} if family in LATIN else {},
            )
        )
    return people


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in roster()])
    return ledger


def test_check_passes_on_first_notice(filled: Ledger) -> None:
    report = check_campaign(filled, with_contact(load_campaign("2020-03-breach")))
    assert report.ok, [str(p) for p in report.problems]
    assert report.volunteers == 120
    assert report.by_locale == {"en": 60, "ja": 60}
    assert report.notes == ()


def test_check_update_before_first_notice_is_sent_checks_attribute_audience(
    filled: Ledger,
) -> None:
    ticks: list[int] = []
    report = check_campaign(
        filled, with_contact(load_campaign("2020-04-29-update")), progress=lambda: ticks.append(1)
    )
    assert report.ok, [str(p) for p in report.problems]
    assert not report.history_applied
    assert any("2020-03-breach has not been sent yet" in note for note in report.notes)
    assert report.volunteers == 120 == len(ticks)  # everyone the first notice will reach


def test_check_update_after_first_notice_uses_outcomes(filled: Ledger) -> None:
    filled.db.table("campaigns").insert({"campaign_id": "2020-03-breach", "title": "first"})
    filled.db.table("messages").insert_all(
        {
            "message_id": f"<m{n}@example.org>",
            "campaign_id": "2020-03-breach",
            "volunteer_id": f"HMR-{n:04d}",
            "verp_token": f"t{n}",
            "state": "bounced_hard" if n % 4 == 0 else "delivered",
        }
        for n in range(120)
    )
    report = check_campaign(filled, with_contact(load_campaign("2020-04-29-update")))
    assert report.ok and report.history_applied and report.notes == ()
    assert report.volunteers == 90  # all 120, less the 30 hard bounces


def test_check_empty_audience_is_a_problem(ledger: Ledger) -> None:
    report = check_campaign(ledger, with_contact(load_campaign("2020-03-breach")))
    assert [p.kind for p in report.problems] == ["audience"]


# --- broken campaigns -------------------------------------------------------------------


def broken(
    tmp_path: Path, edit: Callable[[Path, Path], None], campaign: str = "2020-03-breach"
) -> Path:
    """A copy of a shipped campaign with its own templates and catalogs, edited."""
    templates, catalogs = tmp_path / "templates", tmp_path / "locale"
    shutil.copytree(TEMPLATES_DIR, templates)
    shutil.copytree(LOCALE_DIR, catalogs, ignore=shutil.ignore_patterns("*.mo"))
    edit(templates, catalogs)
    source = load_campaign(campaign).path
    assert source is not None
    text = source.read_text(encoding="utf-8").replace(
        "\nallow_links = false",
        '\nallow_links = false\ntemplates_dir = "templates"\nlocale_dir = "locale"',
    )
    text = text.replace('follows = "2020-03-breach"', "")
    text = text.replace('follows_states = ["sent", "delivered", "expired"]', "")
    path = tmp_path / f"{campaign}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def replace_in(path: Path, old: str, new: str) -> None:
    source = path.read_text(encoding="utf-8")
    assert old in source, old
    path.write_text(source.replace(old, new, 1), encoding="utf-8")


def run_check(ledger: Ledger, path: Path) -> CheckReport:
    report = check_campaign(ledger, with_contact(load_campaign(path)))
    assert not report.ok
    return report


def test_check_reports_missing_variable_once_with_file_line_and_count(
    filled: Ledger, tmp_path: Path
) -> None:
    def edit(templates: Path, _catalogs: Path) -> None:
        replace_in(
            templates / "ja" / "_breach.j2",
            "{% block what_happened %}\n",
            "{% block what_happened %}\n{{ dates.reopened|long_date }}\n",
        )

    report = run_check(filled, broken(tmp_path, edit))
    errors = [p for p in report.problems if p.kind == "render_error"]
    assert len(errors) == 1
    assert "ja/_breach.j2:" in errors[0].message and "reopened" in errors[0].message
    assert errors[0].volunteers == 60  # every Japanese reader, and only them


def test_check_refuses_links(filled: Ledger, tmp_path: Path) -> None:
    def edit(templates: Path, _catalogs: Path) -> None:
        replace_in(
            templates / "en" / "_common.j2",
            "search for the website in your browser instead.",
            "see https://help.example.org/attack for more.",
        )

    report = run_check(filled, broken(tmp_path, edit))
    links = [p for p in report.problems if p.kind == "link"]
    assert links and all("https://help.example.org/attack" in p.message for p in links)
    assert [p.volunteers for p in links] == [60]
    assert "in the text and HTML parts" in links[0].message


def test_check_reports_link_in_a_name(ledger: Ledger) -> None:
    people = roster(12)
    people[3] = dataclasses.replace(people[3], given_name="see www.evil.example now")
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in people])
    report = check_campaign(ledger, with_contact(load_campaign("2020-03-breach")))
    assert [(p.kind, p.message, p.volunteers, p.examples) for p in report.problems] == [
        (
            "link",
            "link or URL 'www.evil.example' in a volunteer's name: correct the roster",
            1,
            ("HMR-0003",),
        )
    ]


def test_check_reports_block_missing_in_one_locale(filled: Ledger, tmp_path: Path) -> None:
    def edit(templates: Path, _catalogs: Path) -> None:
        path = templates / "ja" / "_breach.j2"
        source = path.read_text(encoding="utf-8")
        start = source.index("{% block closing %}")
        path.write_text(source[:start], encoding="utf-8")

    report = run_check(filled, broken(tmp_path, edit))
    assert [p.kind for p in report.problems] == ["out_of_step"]
    problem = report.problems[0]
    assert problem.message == "block 'closing' is in en/_breach.j2 but not in ja/_breach.j2"
    assert problem.volunteers == 60


def test_check_reports_required_element_missing(filled: Ledger, tmp_path: Path) -> None:
    def edit(templates: Path, _catalogs: Path) -> None:
        replace_in(
            templates / "en" / "_breach.j2",
            "{% block contact %}{{ wording.contact() }}{% endblock %}",
            "{% block contact %}{% endblock %}",
        )

    report = run_check(filled, broken(tmp_path, edit))
    missing = [p for p in report.problems if p.kind == "missing_element"]
    # Each shape is named: locale × exposure (× the data held, when there are any).
    shapes = {p.message.split(" for ")[1].split(" (")[0] for p in missing}
    assert {" × ".join(shape.split(" × ")[:2]) for shape in shapes} == {
        f"en × {exposure}" for exposure in EXPOSURES
    }
    assert "en × published × id_documents, photo" in shapes
    assert all("'contact' (how to contact us)" in p.message for p in missing)
    assert all("text and HTML part" in p.message for p in missing)
    assert sum(p.volunteers for p in missing) == 60
    assert set(REQUIRED_ELEMENTS) >= {"contact", "what_happened"}


def test_check_reports_fuzzy_and_untranslated_japanese(filled: Ledger, tmp_path: Path) -> None:
    def edit(_templates: Path, catalogs: Path) -> None:
        po = catalogs / "ja" / "LC_MESSAGES" / "messages.po"
        replace_in(po, 'msgid "What happened"', '#, fuzzy\nmsgid "What happened"')
        replace_in(po, 'msgstr "お問い合わせ先"', 'msgstr ""')

    report = run_check(filled, broken(tmp_path, edit))
    messages = {p.message.split(": ", 1)[1]: p.volunteers for p in report.problems}
    assert messages == {
        "fuzzy entry 'What happened'": 60,
        "untranslated entry 'How to contact us'": 60,
    }
    assert all(
        p.kind == "catalog" and "ja/LC_MESSAGES/messages.po:" in p.message for p in report.problems
    )


def test_check_cli_passes_and_fails(filled: Ledger, tmp_path: Path, notifier: Notifier) -> None:
    filled.close()
    write_org_config(tmp_path)
    result = notifier("check", "2020-03-breach")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.strip() == "2020-03-breach: 120 messages rendered (en 60, ja 60); no problems"
    )

    def edit(templates: Path, _catalogs: Path) -> None:
        replace_in(
            templates / "en" / "_common.j2",
            "Bank Safe Online, the UK banking",
            "www.banksafeonline.example (the UK banking",
        )

    result = notifier("check", str(broken(tmp_path / "b", edit)))
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert problems == [
        "problem: link, URL or attachment 'www.banksafeonline.example' in the text and HTML "
        "parts: a breach notice carries none (set allow_links = true in the campaign to allow) "
        "[60 volunteers, e.g. HMR-0000, HMR-0002, HMR-0004]"
    ]


def test_check_cli_malformed_campaign_is_one_line(notifier: Notifier, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "bad"\ntitle = "no template"\n', encoding="utf-8")
    result = notifier("check", str(bad))
    assert result.exit_code == 2
    assert "bad.toml: template: missing key" in result.stderr
    assert "Traceback" not in result.output


def test_campaign_cli_list_and_show(filled: Ledger, notifier: Notifier) -> None:
    filled.close()
    listed = notifier("campaign", "list")
    assert listed.exit_code == 0
    assert "2020-03-breach" in listed.stdout and "2020-04-29-update" in listed.stdout
    shown = notifier("campaign", "show", "2020-04-29-update")
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert "Update on the cyber attack on HMR" in out and "【続報】" in out
    assert "follows" in out and "2020-03-breach" in out
    assert "has not been sent yet, so it is not yet known who it reached" in out
    assert "Who it goes to (120 volunteers)" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["en"] == ["20", "20", "20", "60"]
    assert rows["total"] == ["40", "40", "40", "120"]


# --- content: contradictions, the data list, the contact point, the promise -------------


def test_check_reports_contradictions_with_count_and_examples(ledger: Ledger) -> None:
    people = roster(12)
    # Never screened, yet screening records: the notice would be untrue either way.
    for n in (2, 4, 5):
        people[n] = dataclasses.replace(people[n], data_held=("id_documents", "bank_details"))
    assert {people[n].exposure for n in (2, 4, 5)} == {"screened", "database_only"}
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in people])
    report = check_campaign(ledger, with_contact(load_campaign("2020-03-breach")))
    contradictions = [p for p in report.problems if p.kind == "contradiction"]
    database_only = [n for n in (2, 4, 5) if people[n].exposure == "database_only"]
    assert len(contradictions) == 1
    assert contradictions[0].volunteers == len(database_only) == 2
    assert contradictions[0].examples == tuple(people[n].volunteer_id for n in database_only)
    assert "database_only" in contradictions[0].message
    assert str(contradictions[0]).endswith("[2 volunteers, e.g. HMR-0004, HMR-0005]")


def test_check_reports_empty_data_section(filled: Ledger, tmp_path: Path) -> None:
    def edit(templates: Path, _catalogs: Path) -> None:
        replace_in(
            templates / "en" / "breach" / "database_only.j2",
            "{{ common.database_records("
            '"Our volunteer database holds the following about you:") }}',
            "",
        )

    report = run_check(filled, broken(tmp_path, edit))
    missing = [p for p in report.problems if p.kind == "missing_element"]
    assert len(missing) == 1
    assert "'data_involved'" in missing[0].message and "no list of the data" in missing[0].message
    assert "en × database_only" in missing[0].message
    assert missing[0].volunteers == 20 and len(missing[0].examples) == 3


def test_check_reports_a_contact_point_left_out(filled: Ledger, tmp_path: Path) -> None:
    def edit(templates: Path, _catalogs: Path) -> None:
        replace_in(templates / "ja" / "_common.j2", "電話：{{ contact.phone }}\n", "")
        replace_in(
            templates / "ja" / "_common.j2",
            "（メール：{{ contact.email }}{% if contact.phone %}、電話：{{ contact.phone }}"
            "{% endif %}）",
            "",
        )
        # The Reply-To, which the section names too, is the contact point's address here.
        reply = "ご返信は {{ reply_to_address }} に届きます。\n"
        replace_in(templates / "ja" / "_common.j2", reply, "")

    report = run_check(filled, broken(tmp_path, edit))
    # One problem per shape of Japanese message, together every Japanese reader.
    contact = [p for p in report.problems if p.message.startswith("required element 'contact'")]
    assert all("the contact point's phone not given" in p.message for p in contact)
    assert all(" for ja × " in p.message for p in contact)
    assert sum(p.volunteers for p in contact) == 60
    anti = [p for p in report.problems if p.message.startswith("required element 'anti_phishing'")]
    assert anti and all("the contact point's email not given" in p.message for p in anti)
    assert sum(p.volunteers for p in anti) == 60


def follow_up(tmp_path: Path, audience: str) -> Path:
    """A copy of the shipped update with another [audience], beside the first notice."""
    source = load_campaign("2020-04-29-update").path
    assert source is not None
    text = source.read_text(encoding="utf-8")
    text = text[: text.index("[audience]")] + audience
    path = tmp_path / "update.toml"
    path.write_text(text.replace('id = "2020-04-29-update"', 'id = "narrow-update"'), "utf-8")
    return path


def test_check_follow_up_must_reach_everyone_it_was_promised(
    filled: Ledger, tmp_path: Path
) -> None:
    narrow = follow_up(tmp_path, '[audience]\nexposures = ["screened", "database_only"]\n')
    report = check_campaign(filled, with_contact(load_campaign(narrow)))
    cohort = [p for p in report.problems if p.kind == "cohort"]
    assert len(cohort) == 1
    problem = cohort[0]
    assert problem.volunteers == 40  # every published volunteer, in both locales
    assert problem.examples == ("HMR-0000", "HMR-0001", "HMR-0006")
    assert "2020-03-breach promised to write to these people again" in problem.message
    assert "exposure published is not in its audience" in problem.message
    # The shipped update keeps the promise.
    assert check_campaign(filled, with_contact(load_campaign("2020-04-29-update"))).ok


def test_check_follow_up_states_must_include_delivered(filled: Ledger, tmp_path: Path) -> None:
    only_sent = follow_up(tmp_path, '[audience]\nfollows_states = ["sent"]\n')
    campaign = with_contact(load_campaign(only_sent))
    # Before the first notice is sent: everyone would be left out once it is delivered.
    before = [p for p in check_campaign(filled, campaign).problems if p.kind == "cohort"]
    assert [p.volunteers for p in before] == [120]
    assert "leaves out people whose notice is delivered" in before[0].message
    # After: exactly the people whose first notice was delivered.
    filled.db.table("campaigns").insert({"campaign_id": "2020-03-breach", "title": "first"})
    filled.db.table("messages").insert_all(
        {
            "message_id": f"<m{n}@example.org>",
            "campaign_id": "2020-03-breach",
            "volunteer_id": f"HMR-{n:04d}",
            "verp_token": f"t{n}",
            "state": ("delivered", "sent", "bounced_hard")[n % 3],
        }
        for n in range(120)
    )
    after = [p for p in check_campaign(filled, campaign).problems if p.kind == "cohort"]
    assert [(p.volunteers, p.examples) for p in after] == [
        (40, ("HMR-0000", "HMR-0003", "HMR-0006"))
    ]
    assert "whose notice is delivered" in after[0].message


def test_check_without_a_promise_holds_no_follow_up_to_one(filled: Ledger, tmp_path: Path) -> None:
    def edit(templates: Path, _catalogs: Path) -> None:
        for locale in ("en", "ja"):
            path = templates / locale / "_breach.j2"
            source = path.read_text(encoding="utf-8")
            start = source.index("{% block follow_up_promise %}")
            end = source.index("{% endblock %}", start)
            path.write_text(source[:start] + "{% block follow_up_promise %}" + source[end:])

    first = broken(tmp_path, edit)  # 2020-03-breach.toml, with its own templates
    narrow = follow_up(tmp_path, '[audience]\nexposures = ["screened"]\n')
    assert load_campaign(first).campaign_id == "2020-03-breach"
    report = check_campaign(filled, with_contact(load_campaign(narrow)))
    assert report.ok, [str(p) for p in report.problems]


def test_check_cli_on_the_example_rosters(notifier: Notifier, tmp_path: Path) -> None:
    """The shipped example roster is consistent; one with contradictions is refused."""
    write_org_config(tmp_path)
    examples = Path(__file__).resolve().parent.parent / "examples" / "volunteers.csv"
    assert notifier("roster", "import", str(examples)).exit_code == 0
    for campaign_id in ("2020-03-breach", "2020-04-29-update"):
        result = notifier("check", campaign_id)
        assert result.exit_code == 0, result.output
        assert "no problems" in result.stdout
    lines = examples.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    contradictory = [
        row.replace(",database_only,,", ",database_only,photo;test_results,") for row in rows
    ]
    assert contradictory != rows
    bad = tmp_path / "contradictory.csv"
    bad.write_text("\n".join([header, *contradictory]) + "\n", encoding="utf-8")
    assert notifier("roster", "import", str(bad)).exit_code == 0
    result = notifier("check", "2020-03-breach")
    assert result.exit_code == 1
    assert "problem: database_only volunteers with screening records in data_held" in result.stdout


def test_check_follow_up_names_people_corrected_after_the_first_notice(ledger: Ledger) -> None:
    """The update says "as we told you in our earlier notice" from the roster as it is:
    for someone whose exposure or data held was corrected after that notice reached them,
    it would state what the earlier notice did not. check names them (a name change,
    which the update does not restate, is no problem)."""
    people = roster(6)
    add_volunteers(ledger, people)
    with Sink() as sink:
        send(ledger, with_contact(load_campaign("2020-03-breach")), people, sink.url)
    by_id = {v.volunteer_id: v for v in people}
    screened_to_published = dataclasses.replace(by_id["HMR-0002"], exposure="published")
    more_data = dataclasses.replace(by_id["HMR-0001"], data_held=DATA_HELD)
    renamed = dataclasses.replace(by_id["HMR-0003"], given_name="Renamed")
    add_volunteers(ledger, [screened_to_published, more_data, renamed])

    report = check_campaign(ledger, with_contact(load_campaign("2020-04-29-update")))
    corrections = [p for p in report.problems if p.kind == "correction"]
    assert {(p.volunteers, p.examples) for p in corrections} == {
        (1, ("HMR-0002",)),
        (1, ("HMR-0001",)),
    }
    assert any("exposure" in p.message for p in corrections)
    assert any("data_held" in p.message for p in corrections)
    assert all('"as we told you in our earlier notice"' in p.message for p in corrections)
    assert not report.ok


def test_check_corrections_undone_by_reimporting_the_right_roster_clear(ledger: Ledger) -> None:
    """A wrong import corrected an exposure and a data held after the first notice; the
    right roster imported again puts them back as the notice was written: nothing left."""
    people = roster(6)
    add_volunteers(ledger, people)
    with Sink() as sink:
        send(ledger, with_contact(load_campaign("2020-03-breach")), people, sink.url)
    by_id = {v.volunteer_id: v for v in people}
    wrong = [
        dataclasses.replace(by_id["HMR-0002"], exposure="published"),
        dataclasses.replace(by_id["HMR-0001"], data_held=DATA_HELD),
    ]
    add_volunteers(ledger, wrong)
    update = with_contact(load_campaign("2020-04-29-update"))
    assert {p.kind for p in check_campaign(ledger, update).problems} == {"correction"}
    add_volunteers(ledger, people)  # the right roster again
    report = check_campaign(ledger, update)
    assert report.ok, [str(p) for p in report.problems]


def swapped(people: list[Volunteer], a: int, b: int) -> list[Volunteer]:
    """The roster with the addresses of people[a] and people[b] swapped (a spreadsheet
    sorted on one column only)."""
    changed = list(people)
    changed[a] = dataclasses.replace(
        people[a], email=people[b].email, email_ascii=people[b].email_ascii
    )
    changed[b] = dataclasses.replace(
        people[b], email=people[a].email, email_ascii=people[a].email_ascii
    )
    return changed


def test_check_names_both_people_of_a_swap_until_undone_or_confirmed(ledger: Ledger) -> None:
    """After the first notice, an import swaps two people's addresses: the update would
    put each one's notice in the other's mailbox. check names both, per pair; the right
    roster imported again clears it; so does an approval confirming the addresses."""
    people = roster(6)
    add_volunteers(ledger, people)
    with Sink() as sink:
        send(ledger, with_contact(load_campaign("2020-03-breach")), people, sink.url)
    a, b = people[1].volunteer_id, people[4].volunteer_id
    add_volunteers(ledger, swapped(people, 1, 4))
    update = with_contact(load_campaign("2020-04-29-update"))

    report = check_campaign(ledger, update)
    moved = [p for p in report.problems if p.kind == "moved_address"]
    assert sorted(p.examples for p in moved) == [(a, b), (b, a)]
    assert all("--confirm-moved-addresses" in p.message for p in moved)
    assert {p.kind for p in report.problems} == {"moved_address"}
    assert not report.ok

    confirming = check_campaign(ledger, update, confirm_moves=True)
    assert confirming.ok
    assert sorted(m[0] for m in confirming.confirmed_moves) == sorted([a, b])

    add_volunteers(ledger, people)  # the right roster again
    assert check_campaign(ledger, update).ok


def test_check_names_names_and_addresses_that_could_mislead(ledger: Ledger) -> None:
    """A text-direction control in a name, a Cyrillic "а" among the Latin letters of a
    domain or a mailbox: named by the check (the roster imported them with a warning)."""
    people = roster(6)
    people[1] = dataclasses.replace(people[1], family_name="Ha\u202ell")
    look_alike = "volunteer2@exаmple.com"  # a Cyrillic а
    people[2] = dataclasses.replace(people[2], email=look_alike, email_ascii=look_alike)
    people[3] = dataclasses.replace(
        people[3], email="すずき@例え.jp", email_ascii="すずき@xn--r8jz45g.jp"
    )  # Japanese letters mixed as a Japanese address mixes them: fine
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in people])
    report = check_campaign(ledger, with_contact(load_campaign("2020-03-breach")))
    spoofing = {p.message: p for p in report.problems if p.kind == "spoofing"}
    assert len(spoofing) == 2
    by_field = {m.split(" could mislead")[0]: p.examples for m, p in spoofing.items()}
    assert by_field == {
        "volunteers whose family_name": ("HMR-0001",),
        "volunteers whose email": ("HMR-0002",),
    }

"""Roster import on real files, written byte for byte as spreadsheets write them."""

from __future__ import annotations

import csv
import io
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from roster_helpers import read_roster

from notifier.errors import MappingError, RosterError
from notifier.roster import (
    RosterMapping,
    RosterResult,
    RowProblem,
    _check_email_fully,
    check_email,
    load_mapping,
    open_roster,
)
from notifier.volunteer import FIELDS, derive_volunteer_id

# The mapping exactly as the issue gives it, for the Japanese partner's Excel export.
ISSUE_MAPPING = """\
[columns]          # canonical field = header in the file
family_name = "氏名(姓)"
given_name  = "氏名(名)"
email       = "メールアドレス"
locale      = "言語"
exposure    = "区分"

[values.exposure]  # value in the file = canonical value
"会員"   = "published"
"元会員" = "screened"
"""
PARTNER_HEADER = "氏名(姓),氏名(名),メールアドレス,言語,区分,備考"
# Rows 2..9 as a Japanese partner's Excel export holds them. Row 6 has an Alt+Enter line
# break inside a quoted cell: still one spreadsheet row.
PARTNER_RECORDS = [
    "髙橋,一郎,ichiro.takahashi@example.jp,ja,会員,",
    "山﨑,花子,hanako.yamasaki@example.jp,ja,元会員,旧姓 山田",
    "ﾔﾏﾓﾄ,ﾀﾛｳ,taro.yamamoto@example.jp,ja,会員,半角カナ",
    "\u3000佐藤\u3000,健太\u3000,kenta.sato@example.jp,ja,会員,",
    '鈴木,さくら,sakura.suzuki@example.jp,ja,元会員,"連絡は夜間\n(19時以降)"',
    "田中,陽菜,hina.tanaka@example.jp,ja,非会員,",
    "O'Brien,Patrick,patrick.obrien@example.org,en,会員,",
    "渡邉,美咲,ICHIRO.Takahashi@example.jp,ja,会員,",
]
# Excel on Japanese Windows writes these with their IBM-extension codes; Python's cp932
# encoder would pick the NEC-selected ones (EE E0, ED 95), so write them by hand.
IBM_EXTENSION = {"髙": b"\xfb\xfc", "﨑": b"\xfa\xb1"}


def excel_cp932(text: str) -> bytes:
    return b"".join(IBM_EXTENSION.get(ch) or ch.encode("cp932") for ch in text)


def crlf(header: str, records: list[str]) -> str:
    return "".join(f"{line}\r\n" for line in [header, *records])


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def utf8_roster(tmp_path: Path, text: str, name: str = "roster.csv") -> Path:
    return write(tmp_path, name, text.encode("utf-8"))


def by_row(result: RosterResult) -> dict[int, list[RowProblem]]:
    rows: dict[int, list[RowProblem]] = {}
    for p in result.problems:
        rows.setdefault(p.row, []).append(p)
    return rows


HEADER = "email,family_name,given_name,locale,exposure,data_held"


# --- encodings ----------------------------------------------------------------------------


def test_roster_cp932_crlf_with_ibm_extension_kanji(tmp_path: Path) -> None:
    data = excel_cp932(crlf(PARTNER_HEADER, PARTNER_RECORDS[:2]))
    assert b"\xfb\xfc" in data and b"\xfa\xb1" in data and b"\r\n" in data
    with pytest.raises(UnicodeDecodeError):
        data.decode("shift_jis")  # the reason cp932 is the candidate, not shift_jis
    path = write(tmp_path, "partner.csv", data)

    result = read_roster(
        path, mapping=load_mapping(write(tmp_path, "m.toml", ISSUE_MAPPING.encode()))
    )

    assert result.encoding == "cp932"
    assert result.problems == ()
    first, second = (a.volunteer for a in result.accepted)
    assert (first.family_name, first.given_name, first.display_name) == (
        "髙橋",
        "一郎",
        "髙橋 一郎",
    )
    assert second.family_name == "山﨑"
    assert second.exposure == "screened"
    assert second.extra == {"備考": "旧姓 山田"}


def test_roster_utf8_with_bom(tmp_path: Path) -> None:
    text = crlf(HEADER, ["ann@example.org,Smith,Ann,en,published,photo"])
    path = write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + text.encode("utf-8"))
    result = read_roster(path)
    assert result.encoding == "utf-8-sig"
    assert [a.volunteer.email for a in result.accepted] == ["ann@example.org"]


def test_roster_plain_utf8_and_explicit_encodings(tmp_path: Path) -> None:
    path = utf8_roster(tmp_path, crlf(HEADER, ["ann@example.org,Müller,Zoë,en,screened,"]))
    assert read_roster(path).encoding == "utf-8"
    bom = write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + path.read_bytes())
    # Told "utf-8" for a BOM file, the BOM still does not become part of the first header.
    assert read_roster(bom, encoding="utf-8").accepted[0].volunteer.family_name == "Müller"
    sjis = write(
        tmp_path, "ja.csv", excel_cp932(crlf(HEADER, ["a@example.jp,髙橋,一郎,ja,screened,"]))
    )
    assert read_roster(sjis, encoding="cp932").accepted[0].volunteer.family_name == "髙橋"
    with pytest.raises(RosterError, match="not valid utf-8"):
        read_roster(sjis, encoding="utf-8")
    with pytest.raises(RosterError, match="unknown encoding"):
        read_roster(path, encoding="klingon")


@pytest.mark.parametrize(
    ("start", "what"),
    [(b"PK\x03\x04\x14\x00\x06\x00", ".xlsx"), (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", ".xls")],
)
def test_roster_workbook_instead_of_csv_says_so(tmp_path: Path, start: bytes, what: str) -> None:
    path = write(tmp_path, "volunteers.xlsx", start + bytes(range(256)) * 4)
    with pytest.raises(RosterError) as caught:
        read_roster(path)
    assert what in str(caught.value) and "not a CSV file" in str(caught.value)
    assert "CSV UTF-8" in (caught.value.hint or "")


def test_roster_undecodable_names_byte_offset_and_row(tmp_path: Path) -> None:
    # Row 3 has a line break inside a quoted cell, so the bad byte is on physical line 5
    # but in spreadsheet row 4.
    data = (
        b"email,family_name,exposure,notes\r\n"
        b"a@example.org,Smith,published,\r\n"
        b'b@example.org,Jones,published,"two\r\nlines"\r\n'
        b"c@example.org,Ta\xffylor,published,\r\n"
    )
    path = write(tmp_path, "bad.csv", data)
    with pytest.raises(RosterError) as caught:
        read_roster(path)
    offset = data.index(b"\xff")
    assert caught.value.row == 4
    assert f"byte offset {offset}" in str(caught.value)
    assert "(row 4)" in str(caught.value)
    assert "0xFF" in str(caught.value)
    assert caught.value.hint


@pytest.mark.parametrize(
    "data",
    [
        # A UTF-8 file with one Latin-1 byte: not UTF-8, yet every byte decodes as cp932.
        "email,family_name,exposure\r\na@example.org,Müller,published\r\n".encode()
        + b"b@example.org,Sm\xe9th,published\r\n",
        # English Excel's plain "CSV": cp1252.
        "email,family_name,exposure\r\na@example.org,Siobhán,published\r\n".encode("cp1252")
        + "b@example.org,Seán,published\r\n".encode("cp1252"),
    ],
)
def test_roster_mojibake_from_a_wrong_guess_is_caught_per_row(tmp_path: Path, data: bytes) -> None:
    result = read_roster(write(tmp_path, "r.csv", data))
    assert result.encoding == "cp932"
    assert result.accepted == ()
    assert [p.row for p in result.problems] == [2, 3]
    assert all("garbled" in p.reason and "--encoding" in p.reason for p in result.problems)


def test_roster_utf16_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "u16.csv", "email,family_name\r\n".encode("utf-16"))
    with pytest.raises(RosterError, match="UTF-16"):
        read_roster(path)


# --- structure ----------------------------------------------------------------------------


def test_roster_quotes_and_alt_enter_line_break(tmp_path: Path) -> None:
    text = crlf(
        HEADER + ",postal_address,notes",
        [
            'bob@example.org,Smith,"Robert ""Bob""",en,published,,"10 Example Street\nLondon",',
            'x@example.org,Jones,Ann,en,published,,,"line one\nline two"',
            "not-an-address,Brown,Tom,en,published,,,",
        ],
    )
    result = read_roster(utf8_roster(tmp_path, text))
    assert result.rows_total == 3
    bob, ann = (a.volunteer for a in result.accepted)
    assert bob.given_name == 'Robert "Bob"'
    assert bob.postal_address == "10 Example Street\nLondon"
    assert ann.extra == {"notes": "line one\nline two"}
    # Records, not lines, are counted: the bad row is spreadsheet row 4.
    assert [p.row for p in result.problems] == [4]
    assert [a.row for a in result.accepted] == [2, 3]


def test_roster_blank_rows_keep_their_numbers(tmp_path: Path) -> None:
    text = crlf(HEADER, [",,,,,", "a@example.org,A,B,en,published,", "", "bad,A,B,en,published,"])
    result = read_roster(utf8_roster(tmp_path, text))
    assert result.rows_total == 2
    assert [a.row for a in result.accepted] == [3]
    assert [p.row for p in result.problems] == [5]


def test_roster_row_with_too_many_cells_is_rejected(tmp_path: Path) -> None:
    text = crlf(HEADER, ["a@example.org,Smith,Ann,en,published,photo,oops"])
    (problem,) = read_roster(utf8_roster(tmp_path, text)).problems
    assert (problem.row, problem.value) == (2, "oops")
    assert "7 cells" in problem.reason


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xef\xbb\xbf", "empty"),
        (b"  \r\n\r\n", "empty"),
        (HEADER.encode() + b"\r\n", "no volunteers"),
        (HEADER.encode() + b"\r\n,,,,,\r\n", "no volunteers"),
        (b"name,phone\r\nAnn,123\r\n", "no email / family_name / exposure column"),
        (b'email,family_name,exposure\r\na@example.org,"Smith,published\r\n', "damaged"),
    ],
)
def test_roster_unusable_files(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(RosterError, match=message) as caught:
        read_roster(write(tmp_path, "r.csv", data))
    assert caught.value.hint
    assert "\n" not in caught.value.message


def test_roster_semicolon_separated_file_gets_a_hint(tmp_path: Path) -> None:
    path = utf8_roster(tmp_path, "email;family_name;exposure\r\na@example.org;A;published\r\n")
    with pytest.raises(RosterError) as caught:
        read_roster(path)
    assert "';'" in (caught.value.hint or "")


# --- names --------------------------------------------------------------------------------


def test_roster_names_are_trimmed_and_nfkc_normalised(tmp_path: Path) -> None:
    text = crlf(
        HEADER,
        [
            "a@example.jp,ﾔﾏﾓﾄ,ﾀﾛｳ,ja,published,",
            "b@example.jp,\u3000鈴木\u3000, 一郎 ,ja,published,",
            "c@example.org,O'Brien,Patrick,en,published,",
            "d@example.org,<b>Smith</b>,Ann,en,published,",
        ],
    )
    v = [a.volunteer for a in read_roster(utf8_roster(tmp_path, text)).accepted]
    assert (v[0].family_name, v[0].given_name) == ("ヤマモト", "タロウ")
    assert v[1].display_name == "鈴木 一郎"
    assert v[2].display_name == "Patrick O'Brien"
    assert v[3].family_name == "<b>Smith</b>"  # templates escape; not a reason to refuse


def test_roster_line_break_inside_a_name_is_rejected(tmp_path: Path) -> None:
    text = crlf(HEADER, ['a@example.org,"Smith\nJones",Ann,en,published,'])
    (problem,) = read_roster(utf8_roster(tmp_path, text)).problems
    assert (problem.row, problem.column, problem.value) == (2, "family_name", "Smith\nJones")
    assert "line break" in problem.reason


# --- addresses ----------------------------------------------------------------------------


def test_roster_internationalised_domain(tmp_path: Path) -> None:
    text = crlf(HEADER, ["Anna.Weber@Bücher.example,Weber,Anna,en,published,"])
    (accepted,) = read_roster(utf8_roster(tmp_path, text)).accepted
    assert accepted.volunteer.email == "Anna.Weber@bücher.example"
    assert accepted.volunteer.email_ascii == "Anna.Weber@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "address",
    [
        "ann@example.org ",
        " ann@example.org",
        "ann @example.org",
        "ann@example.org\t",
        "ann@example.org\u3000",
        "ann\u00a0@example.org",
    ],
)
def test_roster_whitespace_in_or_around_an_address_is_rejected(
    tmp_path: Path, address: str
) -> None:
    text = crlf(HEADER, [f"{address},Smith,Ann,en,published,"])
    result = read_roster(utf8_roster(tmp_path, text))
    assert result.accepted == ()
    (problem,) = result.problems
    assert problem.value == address  # as in the file: never trimmed
    assert "whitespace" in problem.reason


def test_roster_duplicate_addresses_differing_in_case(tmp_path: Path) -> None:
    text = crlf(
        HEADER,
        [
            "Ann.Smith@example.org,Smith,Ann,en,published,",
            "b@example.org,Brown,Bob,en,published,",
            "ann.smith@EXAMPLE.ORG,Smith,Annie,en,screened,",
        ],
    )
    result = read_roster(utf8_roster(tmp_path, text))
    assert [a.row for a in result.accepted] == [2, 3]
    (problem,) = result.problems
    assert (problem.row, problem.column) == (4, "email")
    assert "row 2" in problem.reason


def test_roster_invalid_address_reason_comes_from_the_validator(tmp_path: Path) -> None:
    text = crlf(HEADER, ["ann.example.org,Smith,Ann,en,published,"])
    (problem,) = read_roster(utf8_roster(tmp_path, text)).problems
    assert "@" in problem.reason


# --- vocabularies and required fields -------------------------------------------------------


def test_roster_unknown_values_and_empty_required_fields(tmp_path: Path) -> None:
    text = crlf(
        HEADER,
        [
            "a@example.org,Smith,Ann,en,leaked,",
            "b@example.org,Jones,Bob,fr,published,",
            "c@example.org,Brown,Cy,en,published, photo ; wings ;id_documents",
            ",,Dee,en,,",
            "e@example.org,Evans,Eve,EN,Published,PHOTO;;id_documents;photo",
        ],
    )
    result = read_roster(utf8_roster(tmp_path, text))
    rows = by_row(result)
    assert [(p.column, p.value) for p in rows[2]] == [("exposure", "leaked")]
    assert [(p.column, p.value) for p in rows[3]] == [("locale", "fr")]
    assert [(p.column, p.value) for p in rows[4]] == [("data_held", "wings")]
    # One problem per problem: a row can have several.
    assert [p.column for p in rows[5]] == ["email", "family_name", "exposure"]
    assert all("required" in p.reason for p in rows[5])
    (eve,) = (a.volunteer for a in result.accepted)
    assert (eve.locale, eve.exposure, eve.data_held) == (
        "en",
        "published",
        ("id_documents", "photo"),
    )


def test_roster_locale_column_absent_or_empty(tmp_path: Path) -> None:
    no_locale = utf8_roster(
        tmp_path, crlf("email,family_name,exposure", ["a@x.example,A,screened"])
    )
    assert read_roster(no_locale, default_locale="ja").accepted[0].volunteer.locale == "ja"
    assert read_roster(no_locale).accepted[0].volunteer.locale == "en"
    with pytest.raises(RosterError, match="default locale"):
        read_roster(no_locale, default_locale="fr")
    empty = utf8_roster(tmp_path, crlf(HEADER, ["a@x.example,A,B,,screened,"]), "e.csv")
    (problem,) = read_roster(empty, default_locale="ja").problems
    assert problem.column == "locale"


def test_roster_volunteer_id_given_or_derived(tmp_path: Path) -> None:
    text = crlf(
        "volunteer_id," + HEADER,
        [
            "HMR-1,a@example.org,A,B,en,published,",
            ",Bee@Example.org,A,B,en,published,",
            "HMR-1,c@example.org,A,B,en,published,",
        ],
    )
    result = read_roster(utf8_roster(tmp_path, text))
    assert [a.volunteer.volunteer_id for a in result.accepted] == [
        "HMR-1",
        derive_volunteer_id("Bee@example.org"),
    ]
    assert [(p.row, p.column) for p in result.problems] == [(4, "volunteer_id")]


# --- mapping ------------------------------------------------------------------------------


def partner_rosters(tmp_path: Path) -> tuple[Path, Path, RosterMapping]:
    text = crlf(PARTNER_HEADER, PARTNER_RECORDS)
    sjis = write(tmp_path, "partner-cp932.csv", excel_cp932(text))
    bom = write(tmp_path, "partner-utf8.csv", b"\xef\xbb\xbf" + text.encode("utf-8"))
    mapping = load_mapping(write(tmp_path, "mapping.toml", ISSUE_MAPPING.encode("utf-8")))
    return sjis, bom, mapping


def test_roster_cp932_and_utf8_bom_exports_give_identical_results(tmp_path: Path) -> None:
    """The "done when" of the issue: one roster saved two ways, one mapping file."""
    sjis, bom, mapping = partner_rosters(tmp_path)
    a = read_roster(sjis, mapping=mapping)
    b = read_roster(bom, mapping=mapping)
    assert (a.encoding, b.encoding) == ("cp932", "utf-8-sig")
    assert a.accepted == b.accepted
    assert a.problems == b.problems

    volunteers = {x.row: x.volunteer for x in a.accepted}
    assert sorted(volunteers) == [2, 3, 4, 5, 6, 8]
    assert volunteers[2].display_name == "髙橋 一郎"
    assert volunteers[3].family_name == "山﨑"
    assert volunteers[4].display_name == "ヤマモト タロウ"
    assert volunteers[5].display_name == "佐藤 健太"
    assert volunteers[6].extra == {"備考": "連絡は夜間\n(19時以降)"}
    assert volunteers[8].display_name == "Patrick O'Brien"
    assert [(p.row, p.column, p.value) for p in a.problems] == [
        (7, "区分", "非会員"),
        (9, "メールアドレス", "ICHIRO.Takahashi@example.jp"),
    ]
    assert "row 2" in a.problems[1].reason


def test_roster_mapping_headers_match_full_width_forms(tmp_path: Path) -> None:
    text = crlf("氏名（姓）,メールアドレス,区分", ["鈴木,a@example.jp,会員"])
    mapping = load_mapping(write(tmp_path, "m.toml", ISSUE_MAPPING.encode()))
    path = utf8_roster(tmp_path, text)
    with pytest.raises(RosterError, match="氏名\\(名\\)"):
        read_roster(path, mapping=mapping)  # the mapping names a column the file lacks
    small = write(
        tmp_path,
        "small.toml",
        '[columns]\nfamily_name = "氏名(姓)"\nemail = "メールアドレス"\nexposure = "区分"\n'
        '[values.exposure]\n"会員" = "published"\n'.encode(),
    )
    (accepted,) = read_roster(path, mapping=load_mapping(small)).accepted
    assert accepted.volunteer.exposure == "published"


def test_roster_no_email_column_after_mapping(tmp_path: Path) -> None:
    mapping = write(tmp_path, "m.toml", b'[columns]\nfamily_name = "name"\nexposure = "kind"\n')
    path = utf8_roster(tmp_path, crlf("name,kind,mail", ["A,published,a@example.org"]))
    with pytest.raises(RosterError, match="no email column") as caught:
        read_roster(path, mapping=load_mapping(mapping))
    assert "mail" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[columns]\nsurname = "姓"\n', "columns.surname"),
        ("[columns]\nemail = 3\n", "columns.email"),
        ('[values.exposure]\n"会員" = "members"\n', "values.exposure.会員"),
        ('[values.exposure]\n"会員" = 1\n', "values.exposure.会員"),
        ('[values.email]\n"a" = "b"\n', "values.email"),
        ('[colums]\nemail = "x"\n', "colums"),
        ('[columns]\nemail = "x"\nfamily_name = "x"\n', "columns.family_name"),
    ],
)
def test_mapping_errors_name_the_file_and_key(tmp_path: Path, toml: str, key: str) -> None:
    path = write(tmp_path, "bad.toml", toml.encode())
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert caught.value.field == key
    assert str(path) in str(caught.value)


def test_mapping_bad_toml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.toml", b"[columns\nemail = ")
    with pytest.raises(MappingError, match="not valid TOML") as caught:
        load_mapping(path)
    assert caught.value.file == str(path)
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "missing.toml")


def test_mapping_records_its_own_sha256(tmp_path: Path) -> None:
    one = load_mapping(write(tmp_path, "a.toml", ISSUE_MAPPING.encode()))
    two = load_mapping(write(tmp_path, "b.toml", ISSUE_MAPPING.encode() + b"\n"))
    assert len(one.sha256) == 64 and one.sha256 != two.sha256
    assert one.columns["email"] == "メールアドレス"
    assert one.values["exposure"] == {"会員": "published", "元会員": "screened"}


# --- properties -----------------------------------------------------------------------------

NAME_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=20
)


def roster_text(names: list[tuple[str, str]]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["email", "family_name", "given_name", "exposure"])
    for n, (family, given_name) in enumerate(names):
        writer.writerow([f"p{n}@example.org", family, given_name, "screened"])
    return buffer.getvalue()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.lists(st.tuples(NAME_TEXT, NAME_TEXT), min_size=1, max_size=5))
def test_roster_any_name_round_trips_through_csv(
    tmp_path: Path, names: list[tuple[str, str]]
) -> None:
    for encoding, bom in (("utf-8", b""), ("utf-8", b"\xef\xbb\xbf")):
        path = write(tmp_path, "p.csv", bom + roster_text(names).encode(encoding))
        result = read_roster(path)
        by_number = {a.row: a.volunteer for a in result.accepted}
        rejected = {p.row for p in result.problems}
        for n, (family, given_name) in enumerate(names):
            row = n + 2
            # Nothing is lost silently: a row is imported exactly, or reported.
            assert (row in by_number) != (row in rejected)
            if not unicodedata.normalize("NFKC", family).strip():
                assert row in rejected
            if row in by_number:
                volunteer = by_number[row]
                assert volunteer.family_name == unicodedata.normalize("NFKC", family).strip()
                assert volunteer.given_name == unicodedata.normalize("NFKC", given_name).strip()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(st.sampled_from("髙﨑鈴木一郎ﾔﾏﾓﾄ\u3000 'O\"Brien,\n"), min_size=1, max_size=12)
)
def test_roster_cp932_and_utf8_agree_on_any_japanese_name(tmp_path: Path, names: list[str]) -> None:
    family = "".join(names).replace("\n", "")
    # Behind a real Japanese row, as in any real export: a file of two or three Japanese
    # letters can happen to be valid UTF-8 too (then --encoding cp932 says which).
    text = roster_text([("髙橋", "一郎"), (family, "x")])
    sjis = read_roster(write(tmp_path, "a.csv", excel_cp932(text)))
    utf8 = read_roster(write(tmp_path, "b.csv", b"\xef\xbb\xbf" + text.encode()))
    assert sjis.accepted == utf8.accepted
    assert sjis.problems == utf8.problems


LOCAL = st.text(st.sampled_from("abcXYZ019._+-'!#~\"@ é"), min_size=0, max_size=12)
DOMAIN = st.sampled_from(
    [
        "example.org",
        "EXAMPLE.com",
        "bücher.example",
        "例え.example",
        "a..b",
        "-x.org",
        "localhost",
        "x",
    ]
)


@settings(max_examples=150, deadline=None)
@given(local=LOCAL, domain=DOMAIN)
def test_roster_fast_address_check_agrees_with_email_validator(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    fast = check_email(address)
    full = _check_email_fully(address)
    if " " in address:
        assert isinstance(fast, str) and "whitespace" in fast
    else:
        assert fast == full


def test_roster_result_fields(tmp_path: Path) -> None:
    text = crlf(HEADER, ["a@example.org,A,B,en,published,"])
    path = utf8_roster(tmp_path, text)
    result = read_roster(path)
    assert result.file == path
    assert len(result.sha256) == 64
    assert result.rows_total == 1
    assert set(result.accepted[0].volunteer.as_record()) == {*FIELDS, "display_name", "email_ascii"}


def test_names_and_addresses_that_could_mislead_import_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "roster.csv"
    path.write_text(
        "volunteer_id,email,family_name,given_name,exposure\n"
        "V1,oliver@example.org,Ha\u202ell,Oliver,published\n"
        "V2,mia@exаmple.org,Garcia,Mia,published\n"  # a Cyrillic а in the domain
        "V3,すずき@例え.jp,鈴木,花子,screened\n",
        encoding="utf-8",
    )
    result = read_roster(path)
    assert [a.volunteer.volunteer_id for a in result.accepted] == ["V1", "V2", "V3"]
    with open_roster(path) as stream:
        for _ in stream.chunks():
            pass
        warnings = list(stream.all_warnings())
    assert [(w.row, w.field) for w in warnings] == [(2, "family_name"), (3, "email")]
    assert "text-direction control (U+202E)" in warnings[0].reason
    assert "mixes Cyrillic and Latin letters" in warnings[1].reason
    assert all(w.reason.endswith("imported; check it") for w in warnings)

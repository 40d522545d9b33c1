"""Write the example rosters: fictional volunteers, deterministic, byte for byte.

    python examples/make_volunteers.py [OUTPUT_DIR]     (default: this directory)

Writes:
  volunteers.csv            ~200 volunteers in UTF-8, both locales, all three exposures,
                            varied data_held, names with apostrophes, quotes and long
                            double-barrelled names, and a handful of bad rows, so a newcomer
                            sees what the error report looks like. The good rows agree with
                            the 2020 notice: only screened and published people have
                            screening records in data_held, and published people have
                            surnames beginning with D, G, I or J (as romanised);
  partner-ja.csv            a Japanese partner's Excel export: cp932, CRLF, Japanese
                            headers and values, including the IBM-extension kanji 髙 and 﨑;
  partner-ja-mapping.toml   the mapping that reads it.

Everyone here is invented; every address is on a reserved example domain. The output
depends only on the fixed seed, never on the time or the machine.
"""

from __future__ import annotations

import csv
import io
import random
import sys
from pathlib import Path

from notifier.volunteer import EXPOSURES, FIELDS

SEED = 20200314  # the day of the attack in the 2020 notice
COUNT = 200
# "family_name_latin" and "notes" are not canonical fields: they are kept with the
# volunteer as extra attributes. The first is the family name as a Japanese volunteer's
# records spell it in Latin letters: what the check of the published surnames reads.
HEADER = (*FIELDS, "family_name_latin", "notes")
EN_DOMAINS = ("example.org", "example.com")
JA_DOMAIN = "example.jp"

EN_FAMILY = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green",
    "Hall", "Wood", "Jackson", "Clarke", "O'Brien", "O'Neill", "D'Arcy", "O'Connor",
    "Fortescue-Smythe", "Bowes-Lyon", "Montgomery-Worthington-Hargreaves",
    "Vaughan-Williams", "Ní Bhriain", "Dubois", "García", "Müller",
)  # fmt: skip
EN_GIVEN = (
    "Oliver", "Amelia", "Harry", "Isla", "Jack", "Ava", "George", "Mia", "Noah", "Grace",
    "Patrick", "Siobhan", "Zoë", "Chloé", "Robert \"Bob\"", "Margaret \"Peggy\"",
    "Anna-Louise", "Seán", "Elizabeth Alexandra", "Tom",
)  # fmt: skip
# (kanji, romaji) so addresses can be made from names.
JA_FAMILY = (
    ("鈴木", "suzuki"), ("佐藤", "sato"), ("高橋", "takahashi"), ("田中", "tanaka"),
    ("伊藤", "ito"), ("渡辺", "watanabe"), ("山本", "yamamoto"), ("中村", "nakamura"),
    ("小林", "kobayashi"), ("加藤", "kato"), ("髙橋", "takahashi"), ("山﨑", "yamasaki"),
    ("渡邉", "watanabe"), ("齋藤", "saito"), ("長谷川", "hasegawa"), ("後藤", "goto"),
    ("井上", "inoue"),
)  # fmt: skip
# The published records were of volunteers with surnames beginning with D, G, I or J.
PUBLISHED_INITIALS = ("d", "g", "i", "j")
# What was kept from people's screening visits: not everything for everyone ("we don't
# have electronic copies of identity documents, health information and bank details for
# everyone we've screened"), and sometimes nothing on record (the notice then says what
# the records may have included).
SCREENING_PROFILES: tuple[tuple[str, ...], ...] = (
    (),
    ("id_documents", "photo", "health_questionnaire", "consent_form"),
    ("id_documents", "photo", "health_questionnaire", "consent_form", "gp_information",
     "test_results"),
    ("id_documents", "photo", "health_questionnaire", "consent_form", "gp_information",
     "test_results", "bank_details"),
    ("id_documents", "photo", "bank_details"),
    ("health_questionnaire", "consent_form", "test_results"),
)  # fmt: skip
JA_GIVEN = (
    ("一郎", "ichiro"), ("花子", "hanako"), ("太郎", "taro"), ("さくら", "sakura"),
    ("健太", "kenta"), ("陽菜", "hina"), ("翔", "sho"), ("美咲", "misaki"), ("大輔", "daisuke"),
    ("由美", "yumi"),
)  # fmt: skip
EN_STREETS = ("Example Street", "Sample Road", "Placeholder Lane", "Fictional Avenue")
EN_TOWNS = ("London", "Manchester", "Leeds", "Bristol")
JA_PLACES = ("東京都千代田区例町", "大阪府大阪市見本区架空町", "京都府京都市例区仮町")


def _ascii_local(text: str) -> str:
    table = str.maketrans("éëáüíó", "eeauio", " '\"")
    return text.lower().translate(table).replace('"', "")


def volunteer_rows(rng: random.Random) -> list[list[str]]:
    rows: list[list[str]] = []
    used: set[str] = set()
    for n in range(1, COUNT + 1):
        japanese = rng.random() < 0.3
        exposure = EXPOSURES[n % 3] if n <= 30 else rng.choice(EXPOSURES)
        published = exposure == "published"
        if japanese:
            families = [f for f in JA_FAMILY if not published or f[1][0] in PUBLISHED_INITIALS]
            (family, family_r), (given, given_r) = rng.choice(families), rng.choice(JA_GIVEN)
            local, domain, locale = f"{given_r}.{family_r}", JA_DOMAIN, "ja"
        else:
            en_families = [
                f for f in EN_FAMILY if not published or f[0].lower() in PUBLISHED_INITIALS
            ]
            family, given = rng.choice(en_families), rng.choice(EN_GIVEN)
            first = given.split(" ")[0]
            local, domain, locale = (
                f"{_ascii_local(first)}.{_ascii_local(family)}",
                rng.choice(EN_DOMAINS),
                "en",
            )
        email = f"{local}@{domain}"
        if email in used:
            email = f"{local}{n}@{domain}"
        used.add(email)
        # Someone never screened has no screening records: only their name and contact
        # details, in the volunteer database.
        held = () if exposure == "database_only" else rng.choice(SCREENING_PROFILES)
        if japanese:
            address = f"{rng.choice(JA_PLACES)}{rng.randint(1, 9)}-{rng.randint(1, 30)}"
        else:
            address = f"{rng.randint(1, 120)} {rng.choice(EN_STREETS)}, {rng.choice(EN_TOWNS)}"
        rows.append(
            [
                f"HMR-{n:04d}",
                email,
                family,
                given,
                locale,
                exposure,
                ";".join(held),
                address if rng.random() < 0.3 else "",
                family_r.capitalize() if japanese else "",
                "",
            ]
        )
    # An internationalised domain, and a note that spans two lines (Excel Alt+Enter).
    rows[7][1:5] = ["anna.weber@bücher.example", "Weber", "Anna", "en"]
    rows[11][9] = "prefers letters\nto email"
    rows[12][9] = 'said "call after 6pm"'
    return rows


def add_bad_rows(rows: list[list[str]]) -> None:
    """A handful of the mistakes real rosters contain, at fixed places."""
    rows[20][1] = "jane.doe.example.org"  # no @ at all
    rows[41][1] = rows[3][1].upper()  # duplicate of an earlier address, in other case
    rows[62][5] = "leaked"  # not an exposure category
    rows[83][2] = ""  # empty family name
    rows[104][6] = "photo;passport_scan"  # not a data_held item
    rows[125][1] = rows[125][1] + " "  # trailing space after the address


def csv_bytes(rows: list[list[str]], header: tuple[str, ...]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# --- the Japanese partner's Excel export ---------------------------------------------------

PARTNER_HEADER = ("氏名(姓)", "氏名(名)", "メールアドレス", "言語", "区分", "備考")
PARTNER_ROWS: tuple[tuple[str, ...], ...] = (
    ("髙橋", "一郎", "i.takahashi@example.jp", "日本語", "会員", ""),
    ("山﨑", "花子", "h.yamasaki@example.jp", "日本語", "元会員", "旧姓: 山田"),
    ("ﾔﾏﾓﾄ", "ﾀﾛｳ", "t.yamamoto@example.jp", "日本語", "会員", "半角カナで登録"),
    ("\u3000佐藤", "健太\u3000", "k.sato@example.jp", "日本語", "登録のみ", ""),
    ("鈴木", "さくら", "s.suzuki@example.jp", "日本語", "元会員", "連絡は夜間\n(19時以降)"),
    ("Smith", "Oliver", "o.smith@example.com", "英語", "会員", "英国在住"),
    ("O'Brien", "Patrick", "p.obrien@example.org", "英語", "登録のみ", ""),
    ("田中", "陽菜", "h.tanaka＠example.jp", "日本語", "会員", "全角＠"),
    ("渡邉", "美咲", "m.watanabe@example.jp", "日本語", "会員", ""),
    ("齋藤", "大輔", "d.saito@example.jp", "日本語", "元会員", ""),
)
PARTNER_MAPPING = """\
# How the Japanese partner's Excel export names things.
# notifier roster import partner-ja.csv --mapping partner-ja-mapping.toml

[columns]          # canonical field = header in the file
family_name = "氏名(姓)"
given_name  = "氏名(名)"
email       = "メールアドレス"
locale      = "言語"
exposure    = "区分"

[values.exposure]  # value in the file = canonical value
"会員"     = "screened"
"元会員"   = "screened"
"登録のみ" = "database_only"

[values.locale]
"日本語" = "ja"
"英語"   = "en"
"""

# Excel on Japanese Windows writes these kanji with their IBM-extension codes, which
# Python's cp932 encoder would write as the NEC-selected ones (EE E0, ED 95) instead.
IBM_EXTENSION = {"髙": b"\xfb\xfc", "﨑": b"\xfa\xb1"}


def excel_cp932(text: str) -> bytes:
    return b"".join(IBM_EXTENSION.get(ch) or ch.encode("cp932") for ch in text)


def write_examples(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = volunteer_rows(random.Random(SEED))
    add_bad_rows(rows)
    written = {
        out / "volunteers.csv": csv_bytes(rows, HEADER).encode("utf-8"),
        out / "partner-ja.csv": excel_cp932(
            csv_bytes([list(r) for r in PARTNER_ROWS], PARTNER_HEADER)
        ),
        out / "partner-ja-mapping.toml": PARTNER_MAPPING.encode("utf-8"),
    }
    for path, data in written.items():
        path.write_bytes(data)
    return list(written)


def main(argv: list[str]) -> None:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    for path in write_examples(out):
        sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main(sys.argv)

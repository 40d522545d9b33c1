"""Benchmark: import a generated 100,000-row roster into a fresh ledger.

    python bench/import_roster.py [--rows N]

Prints rows/s for the whole import (read_roster + Ledger.record_import, one transaction)
and the process's peak RSS. Targets: at least 20,000 rows/s, peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from notifier.ledger import Ledger
from notifier.roster import read_roster
from notifier.volunteer import EXPOSURES, FIELDS

TARGET_ROWS_PER_S = 20_000
TARGET_RSS_MB = 300
# No volunteer_id column (ids are derived from the address); "notes" is an extra column.
HEADER = (*(f for f in FIELDS if f != "volunteer_id"), "notes")
EN = ("Smith", "O'Brien", "Fortescue-Smythe", "Jones", "Taylor", "D'Arcy")
JA = ("鈴木", "髙橋", "山﨑", "佐藤", "渡邉", "ﾔﾏﾓﾄ")
DATA_HELD = ("id_documents", "photo", "health_questionnaire", "consent_form", "bank_details")


def write_roster(path: Path, rows: int, seed: int = 1) -> None:
    """A roster like a real one: mixed locales, some addresses, ~1% bad rows."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for n in range(rows):
            ja = n % 3 == 0
            family = rng.choice(JA if ja else EN)
            email = f"person{n}@example.{'jp' if ja else 'org'}"
            exposure = rng.choice(EXPOSURES)
            if n % 100 == 99:  # a bad row now and then, as in real rosters
                email = email.replace("@", " @")
            writer.writerow(
                (
                    email,
                    family,
                    "一郎" if ja else '"Bob" Robert',
                    "ja" if ja else "en",
                    exposure,
                    ";".join(rng.sample(DATA_HELD, rng.randint(0, 3))),
                    f"{n} Example Street, London" if n % 4 == 0 else "",
                    "note" if n % 10 == 0 else "",
                )
            )


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / scale / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        roster = Path(tmp) / "roster.csv"
        write_roster(roster, args.rows)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = read_roster(roster)
        read_done = time.perf_counter()
        with Ledger(Path(tmp) / "notifier.db") as led:
            summary = led.record_import(result)
        end, cpu_end = time.perf_counter(), time.process_time()
    total = end - start
    rate = args.rows / total
    rss = peak_rss_mb()
    print(
        f"{args.rows} rows ({summary.added} added, {summary.rejected} rejected) in {total:.2f} s "
        f"(read {read_done - start:.2f} s, ledger {end - read_done:.2f} s): "
        f"{rate:,.0f} rows/s; peak RSS {rss:.0f} MB"
    )
    # CPU time too: wall time suffers when other work shares the machine.
    print(f"CPU {cpu_end - cpu_start:.2f} s: {args.rows / (cpu_end - cpu_start):,.0f} rows/CPU-s")
    ok = rate >= TARGET_ROWS_PER_S and rss < TARGET_RSS_MB
    print(
        f"targets: >= {TARGET_ROWS_PER_S:,} rows/s, < {TARGET_RSS_MB} MB: "
        + ("met" if ok else "NOT met")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: `notifier ledger verify` on a 200,000-volunteer ledger with one campaign sent.

    python bench/verify_ledger.py [--volunteers 200000]

Builds the ledger through the ledger API (an import, a campaign, every message claimed and
sent, as a send records it: four events a person), then runs `python -m notifier ledger
verify` in a child process: the keyed chain, and the volunteers, messages, suppressions and
rejected-row tables rebuilt from the events. Prints the time and the child's peak RSS.
Targets: under 10 s on 2 cores, under 300 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_people import bench_volunteers

from notifier.ledger import Ledger
from notifier.message import DeliveryOutcome, NewMessage
from notifier.roster import AcceptedRow, RosterResult

TARGET_SECONDS = 10.0
TARGET_RSS_MB = 300
CAMPAIGN = "2020-03-breach"
CHUNK = 256  # messages claimed and recorded together, as a send's journal does


def build(path: Path, count: int) -> None:
    volunteers = bench_volunteers(count)
    roster = RosterResult(
        file=Path("roster.csv"),
        sha256=hashlib.sha256(str(count).encode()).hexdigest(),
        encoding="utf-8",
        rows_total=count,
        accepted=tuple(AcceptedRow(i + 2, v) for i, v in enumerate(volunteers)),
        problems=(),
    )
    with Ledger(path) as led:
        led.record_import(roster)
        led.register_campaign(
            CAMPAIGN, title="bench", follows=None, definition={}, templates_sha256="0" * 64
        )
        ids = [f"<{v.volunteer_id.lower()}@example.org>" for v in volunteers]
        led.ensure_messages(
            CAMPAIGN,
            [
                NewMessage(m, v.volunteer_id, f"t{i:030d}")
                for i, (m, v) in enumerate(zip(ids, volunteers, strict=True))
            ],
        )
        for start in range(0, count, CHUNK):
            chunk = list(
                zip(ids[start : start + CHUNK], volunteers[start : start + CHUNK], strict=True)
            )
            digest = "0" * 64
            led.claim_for_sending([m for m, _ in chunk], {m: (v.email, digest) for m, v in chunk})
            led.record_outcomes(
                [
                    DeliveryOutcome(
                        m,
                        CAMPAIGN,
                        v.volunteer_id,
                        "sent",
                        1,
                        250,
                        "2.0.0 Ok: queued as X",
                        "X",
                        recipient=v.email,
                        sha256=digest,
                    )
                    for m, v in chunk
                ]
            )


# Runs `notifier ledger verify` and reports its own peak RSS on stderr's last line: measured
# in the child itself, since a child's peak starts at its parent's when it is forked.
VERIFY = """
import resource, sys
sys.argv = ["notifier", "--ledger", sys.argv[1], "ledger", "verify"]
from notifier.cli import main
try:
    main()
finally:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak-rss-kb {peak}", file=sys.stderr)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volunteers", type=int, default=200_000)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args()
    if args.build:
        build(args.build, args.volunteers)
        return 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "notifier.db"
        started = time.perf_counter()
        # Built in a child of its own, so this process stays small (see VERIFY).
        subprocess.run(
            [sys.executable, __file__, "--volunteers", str(args.volunteers), "--build", str(path)],
            check=True,
            env=env,
        )
        print(
            f"built a {args.volunteers}-volunteer ledger in {time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", VERIFY, str(path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            check=False,
        )
        seconds = time.perf_counter() - started
    *messages, peak = result.stderr.strip().splitlines() or ["peak-rss-kb 0"]
    rss_mb = int(peak.split()[-1]) / 1024
    print(result.stdout.strip() or "\n".join(messages))
    if result.returncode != 0:
        print("ledger verify FAILED")
        return 1
    time_met = seconds < TARGET_SECONDS
    rss_met = rss_mb < TARGET_RSS_MB
    verdict = "met" if time_met else "NOT met"
    print(f"ledger verify: {seconds:.1f} s (target < {TARGET_SECONDS:.0f} s): {verdict}")
    verdict = "met" if rss_met else "NOT met"
    print(f"peak RSS: {rss_mb:.0f} MB (target < {TARGET_RSS_MB} MB): {verdict}")
    return 0 if time_met and rss_met else 1


if __name__ == "__main__":
    sys.exit(main())

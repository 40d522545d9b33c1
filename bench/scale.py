"""Scale: a whole campaign and its follow-up for a million people, command by command.

    python bench/scale.py [--volunteers 1000000] [--concurrency 8] [--keep DIR]

Generates a roster (bench_people: a quarter Japanese, the three exposures in turn), then
runs every step as the real command, `python -m notifier ...`, in a child process of its
own, and prints each one's wall time and the peak memory of its whole process tree (the
command and its compose workers: the sum of their resident memory, read from /proc every
50 ms; shared pages count once per process, so the sum errs high):

    roster import, check, approve, send (into Postfix's smtp-sink), status,
    cohort of the 29 April update, approve and send of that follow-up, ledger verify,
    report --format json and html, export unreachable.

Then the targets, each "met" or "NOT met" with its figure: every command under 500 MB;
the follow-up's send start-up (from starting the command to the first message the sink
accepted, read from the ledger's first `sent` event of it: an upper bound, as outcomes are
written a batch at a time) under 5 s on a ledger that holds the first notice sent to
everyone; the cohort under 60 s; report json under 60 s; the HTML report under 5 MB; the
sending rate within 10 % of the 20,000-volunteer bench's (bench/send_throughput.py, run
here first unless `--reference-rate` gives its figure).

Large files (the roster, the ledger, the reports) go in a temporary folder (`--work` to
choose where), deleted at the end; `--keep DIR` copies the ledger and its key there first.

Needs Postfix's tools (Debian/Ubuntu):
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench_people import iter_bench_volunteers
from send_throughput import find_tool, free_port, wait_for_port

from notifier.volunteer import FIELDS, LATIN_FAMILY_NAME

FIRST, FOLLOW_UP = "2020-03-breach", "2020-04-29-update"
ORG_SETTINGS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "organisation.toml"
HERE = Path(__file__).resolve().parent
MB = 1_000_000

TARGET_RSS_MB = 500
TARGET_START_S = 5.0
TARGET_COHORT_S = 60.0
TARGET_REPORT_JSON_S = 60.0
TARGET_HTML_MB = 5.0
TARGET_RATE_SHORTFALL = 0.10
SAMPLE_EVERY = 0.05
HEADER = (*FIELDS, LATIN_FAMILY_NAME)


def write_roster(path: Path, count: int) -> None:
    """The bench's people as a roster file, one row at a time."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for v in iter_bench_volunteers(count):
            writer.writerow(
                (
                    v.volunteer_id,
                    v.email,
                    v.family_name,
                    v.given_name,
                    v.locale,
                    v.exposure,
                    ";".join(v.data_held),
                    "",
                    v.extra.get(LATIN_FAMILY_NAME, ""),
                )
            )


# -- the memory of a process tree, from /proc


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def tree_rss_kib(root: int) -> int:
    """The resident memory of `root` and every descendant, summed (KiB)."""
    total, todo, seen = 0, [root], set()
    while todo:  # bounded: each pid once
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_kib(pid)
        todo += _children(pid)
    return total


class TreeSampler(threading.Thread):
    """The peak of tree_rss_kib(pid) while the process runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid))
            if self.done.wait(SAMPLE_EVERY):
                return


# -- running the commands


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float
    peak_mb: float
    output: str
    started: datetime


class Runner:
    def __init__(self, work: Path, ledger: Path) -> None:
        self.work = work
        self.ledger = ledger
        self.steps: list[Step] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}

    def run(self, name: str, *args: str) -> Step:
        command = [sys.executable, "-m", "notifier", "--ledger", str(self.ledger), *args]
        out_path = self.work / "step-output.txt"
        started = datetime.now(UTC)
        begin = time.perf_counter()
        with out_path.open("w") as out:
            proc = subprocess.Popen(
                command, cwd=self.work, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
            sampler = TreeSampler(proc.pid)
            sampler.start()
            code = proc.wait()
            seconds = time.perf_counter() - begin
            sampler.done.set()
            sampler.join()
        output = out_path.read_text(errors="replace")
        out_path.unlink()
        step = Step(name, seconds, sampler.peak_kib * 1024 / MB, output, started)
        print(f"{name:<28} {seconds:8.1f} s  {step.peak_mb:8.0f} MB", flush=True)
        if code != 0:
            tail = "\n".join(output.splitlines()[-15:])
            raise SystemExit(f"{name} failed (exit {code}):\n{tail}")
        self.steps.append(step)
        return step


def sending_rate(output: str) -> float | None:
    """Messages/s of the sending phase, as a send prints it."""
    match = re.search(r"in ([\d.]+) s \((\d+) messages/s\)", output)
    return float(match.group(2)) if match else None


def first_sent_after(ledger: Path, campaign_id: str, started: datetime) -> float | None:
    """Seconds from `started` to the first `sent` event of the campaign."""
    with sqlite3.connect(ledger) as conn:
        (at,) = conn.execute(
            "SELECT min(at) FROM events WHERE kind = 'sent' AND campaign_id = ?", (campaign_id,)
        ).fetchone()
    if at is None:
        return None
    return (datetime.fromisoformat(at) - started).total_seconds()


def reference_rate(concurrency: int) -> float | None:
    """The 20,000-volunteer bench's sending rate (bench/send_throughput.py), measured now."""
    print("the 20,000-volunteer reference (bench/send_throughput.py) ...", flush=True)
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "send_throughput.py"),
            "--volunteers",
            "20000",
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"([\d.]+) s\s+(\d+) messages/s\s+\(sending phase", result.stdout)
    if result.returncode != 0 or match is None:
        print(result.stdout[-2000:], result.stderr[-2000:])
        return None
    print(f"the 20,000-volunteer bench sends {match.group(2)} messages/s", flush=True)
    return float(match.group(2))


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volunteers", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="copy the ledger and its key here at the end")
    parser.add_argument("--work", type=Path, help="where the temporary folder goes")
    parser.add_argument(
        "--reference-rate",
        type=float,
        help="the 20k bench's sending rate (messages/s), instead of measuring it now",
    )
    args = parser.parse_args()

    sink_tool = find_tool("smtp-sink")
    if not sink_tool:
        print(
            "Postfix's smtp-sink is needed. Install it with:\n"
            "  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix",
            file=sys.stderr,
        )
        return 2
    if args.work is not None and not args.work.is_dir():
        print(f"scale: --work {args.work}: no such folder; create it first", file=sys.stderr)
        return 2
    reference = args.reference_rate or reference_rate(args.concurrency)

    with tempfile.TemporaryDirectory(prefix="notifier-scale-", dir=args.work) as tmp:
        work = Path(tmp)
        port = free_port()
        sink_args = [sink_tool] + (["-u", "nobody"] if os.geteuid() == 0 else [])
        sink = subprocess.Popen([*sink_args, f"127.0.0.1:{port}", "1024"])
        try:
            wait_for_port(port)
            return scale(args, work, port, reference)
        finally:
            sink.terminate()
            sink.wait(10)


def scale(args: argparse.Namespace, work: Path, port: int, reference: float | None) -> int:
    count = args.volunteers
    roster = work / "roster.csv"
    begin = time.perf_counter()
    write_roster(roster, count)
    print(
        f"{count} volunteers: roster written in {time.perf_counter() - begin:.1f} s "
        f"({roster.stat().st_size / MB:.0f} MB); load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    shutil.copy(ORG_SETTINGS, work / "notifier.toml")
    ledger = work / "notifier.db"
    smtp = ["--smtp", f"smtp://127.0.0.1:{port}", "--rate", "0"]
    smtp += ["--concurrency", str(args.concurrency)]
    r = Runner(work, ledger)
    r.run("roster import", "roster", "import", str(roster))
    roster.unlink()
    r.run("check", "check", FIRST)
    r.run("approve", "approve", FIRST, "--by", "bench")
    send = r.run("send", "send", FIRST, "--yes", *smtp)
    r.run("status", "status", FIRST)
    cohort = r.run("cohort (follow-up)", "cohort", FOLLOW_UP)
    r.run("approve (follow-up)", "approve", FOLLOW_UP, "--by", "bench")
    follow = r.run("send (follow-up)", "send", FOLLOW_UP, "--yes", *smtp)
    r.run("ledger verify", "ledger", "verify")
    json_out, html_out = work / "report.json", work / "report.html"
    report_json = r.run("report json", "report", FIRST, "--format", "json", "--out", str(json_out))
    r.run("report html", "report", FIRST, "--format", "html", "--out", str(html_out))
    r.run("export unreachable", "export", "unreachable", "--out", str(work / "unreachable.csv"))

    print(f"ledger file: {ledger.stat().st_size / MB:.0f} MB")
    html_mb = html_out.stat().st_size / MB
    print(f"report json: {json_out.stat().st_size / MB:.0f} MB, html: {html_mb:.2f} MB")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        for name in ("notifier.db", "notifier.db.key", "notifier.toml"):
            if (work / name).exists():
                shutil.copy2(work / name, args.keep / name)
        print(f"ledger kept in {args.keep}")

    print(f"\ntargets at {count} volunteers:")
    results = []
    heaviest = max(r.steps, key=lambda s: s.peak_mb)
    over = [s.name for s in r.steps if s.peak_mb >= TARGET_RSS_MB]
    met = not over
    results.append(met)
    print(
        f"  every command under {TARGET_RSS_MB} MB: {verdict(met)} (largest: {heaviest.name}, "
        f"{heaviest.peak_mb:.0f} MB{'; over: ' + ', '.join(over) if over else ''})"
    )
    start = first_sent_after(ledger, FOLLOW_UP, follow.started)
    met = start is not None and start < TARGET_START_S
    results.append(met)
    shown = "no message sent" if start is None else f"{start:.1f} s"
    print(f"  send start-up (follow-up) under {TARGET_START_S:.0f} s: {verdict(met)} ({shown})")
    for name, step, target in (
        ("cohort", cohort, TARGET_COHORT_S),
        ("report json", report_json, TARGET_REPORT_JSON_S),
    ):
        met = step.seconds < target
        results.append(met)
        print(f"  {name} under {target:.0f} s: {verdict(met)} ({step.seconds:.1f} s)")
    met = html_mb < TARGET_HTML_MB
    results.append(met)
    print(f"  HTML report under {TARGET_HTML_MB:.0f} MB: {verdict(met)} ({html_mb:.2f} MB)")
    for name, step in (("send", send), ("send (follow-up)", follow)):
        rate = sending_rate(step.output)
        if rate is None or reference is None:
            results.append(False)
            print(f"  {name}: sending rate within 10 % of the 20k bench: NOT met (no figure)")
            continue
        met = rate >= reference * (1 - TARGET_RATE_SHORTFALL)
        results.append(met)
        print(
            f"  {name}: sending rate within 10 % of the 20k bench: {verdict(met)} "
            f"({rate:.0f} messages/s, the 20k bench {reference:.0f}: {rate / reference:.0%})"
        )
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

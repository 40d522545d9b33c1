"""Send throughput: notifier against Postfix's own load generator, into the same receiver.

Runs, in one go, on this machine:
  1. Postfix's `smtp-sink` on 127.0.0.1 (a free port) as the receiver;
  2. Postfix's `smtp-source` pushing N messages of the notice's size over C connections:
     the ceiling for this machine and receiver;
  3. `notifier send` of a generated N-volunteer campaign (text + HTML, no rate limit)
     into the same sink, over C connections.
Prints both rates, the ratio notifier / smtp-source, checks that every outcome is in the
ledger (and the hash chain verifies), and the notifier process's resident memory over
the run.

    python bench/send_throughput.py [--volunteers 20000] [--concurrency 8]

Needs Postfix's tools (Debian/Ubuntu):
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_people import bench_volunteers

from notifier.campaign import load_campaign
from notifier.compose import build_message
from notifier.ledger import Ledger
from notifier.render import Renderer
from notifier.roster import AcceptedRow, RosterResult
from notifier.service import Workspace
from notifier.volunteer import Volunteer

CAMPAIGN = "2020-03-breach"
# An organisation of its own (the tests', on .test addresses): the shipped example's
# stand-ins go nowhere but notifier's own sink, and this bench sends to a real server.
ORG_SETTINGS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "organisation.toml"


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/lib/postfix/sbin/{name}") if Path(p).exists()),
        None,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"smtp-sink did not start on port {port}")


def average_size(people: list[Volunteer]) -> int:
    campaign = load_campaign(CAMPAIGN)
    renderer = Renderer(campaign)
    from datetime import UTC, datetime

    sizes = [
        len(build_message(renderer, campaign, v, date=datetime.now(UTC)).data) for v in people[:200]
    ]
    return sum(sizes) // len(sizes)


class RssSampler(threading.Thread):
    """Samples a process's resident memory (VmRSS, kB) from /proc while it runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self.done.wait(0.25):
            try:
                match = re.search(r"VmRSS:\s+(\d+)", status.read_text())
            except OSError:
                return
            if match:
                self.samples.append(int(match.group(1)))


def run_smtp_source(tool: str, port: int, count: int, size: int, sessions: int) -> float:
    args = [tool, "-d", "-s", str(sessions), "-m", str(count), "-l", str(size)]
    args += ["-f", "bench@example.org", "-t", "rcpt@example.org", f"127.0.0.1:{port}"]
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volunteers", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    sink_tool, source_tool = find_tool("smtp-sink"), find_tool("smtp-source")
    if not sink_tool or not source_tool:
        print(
            "Postfix's smtp-sink and smtp-source are needed. Install them with:\n"
            "  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix",
            file=sys.stderr,
        )
        return 2

    with tempfile.TemporaryDirectory(prefix="notifier-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        sink_args = [sink_tool]
        if os.geteuid() == 0:
            sink_args += ["-u", "nobody"]  # smtp-sink refuses to run as root
        sink = subprocess.Popen([*sink_args, f"127.0.0.1:{port}", "1024"])
        try:
            wait_for_port(port)
            people = bench_volunteers(args.volunteers)
            size = average_size(people)
            print(f"{args.volunteers} messages, ~{size} bytes each, {args.concurrency} connections")
            # Other work on the machine moves both rates; say how busy it was.
            print(
                f"load average before the runs: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
            )

            elapsed = run_smtp_source(source_tool, port, args.volunteers, size, args.concurrency)
            ceiling = args.volunteers / elapsed
            print(f"smtp-source: {elapsed:6.2f} s  {ceiling:8.0f} messages/s  (ceiling)")

            ledger_path = work / "bench.db"
            with Ledger(ledger_path) as led:  # as an import records them: rows and events
                led.record_import(
                    RosterResult(
                        file=Path("bench.csv"),
                        sha256="0" * 64,
                        encoding="utf-8",
                        rows_total=len(people),
                        accepted=tuple(AcceptedRow(i + 2, v) for i, v in enumerate(people)),
                        problems=(),
                    )
                )
            # An organisation's settings beside the ledger, as a send needs a contact
            # point; approved as `notifier approve` does it (its check runs then, not in
            # the timed send, as an operator's approval comes before the send).
            shutil.copy(ORG_SETTINGS, work / "notifier.toml")
            with Workspace.open(ledger_path, env={}) as ws:
                ws.approve(CAMPAIGN, "bench")
            command = [
                sys.executable, "-m", "notifier", "--ledger", str(ledger_path),
                "send", CAMPAIGN, "--yes", "--smtp", f"smtp://127.0.0.1:{port}",
                "--rate", "0", "--concurrency", str(args.concurrency),
            ]  # fmt: skip
            env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
            start = time.perf_counter()
            proc = subprocess.Popen(
                command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True,
            )  # fmt: skip
            sampler = RssSampler(proc.pid)
            sampler.start()
            out, _ = proc.communicate()
            total = time.perf_counter() - start
            sampler.done.set()
            if proc.returncode != 0:
                print(out)
                print(f"notifier send failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            # The rate as notifier printed it: its time is rounded to a tenth of a second,
            # a 2.5 % step over the four seconds 20,000 messages take; the rate is not.
            match = re.search(r"in ([\d.]+) s \((\d+) messages/s\)", out)
            rate_total = args.volunteers / total
            rate_delivery = float(match.group(2)) if match else rate_total
            delivery = args.volunteers / rate_delivery
            print(
                f"notifier:    {total:6.2f} s  {rate_total:8.0f} messages/s  "
                f"(whole command: start-up, ledger set-up, sending)"
            )
            print(
                f"             {delivery:6.2f} s  {rate_delivery:8.0f} messages/s  "
                f"(sending phase, as reported by notifier)"
            )
            print(f"ratio notifier / smtp-source: {rate_total / ceiling:.3f} (whole command), "
                  f"{rate_delivery / ceiling:.3f} (sending phase)")  # fmt: skip

            with Ledger(ledger_path) as led:
                states = led.state_counts(CAMPAIGN)
                sent_events = sum(1 for _ in led.events(kinds=["sent"]))
                verified = led.verify()
            complete = states == {"sent": args.volunteers} and sent_events == args.volunteers
            print(
                f"ledger: {states}, {sent_events} sent events, chain "
                f"{'intact' if verified.ok else 'BROKEN: ' + verified.reason}"
                f" -> {'every outcome recorded' if complete else 'OUTCOMES MISSING'}"
            )
            if sampler.samples:
                quarter = max(1, len(sampler.samples) // 4)
                early = max(sampler.samples[:quarter]) / 1024
                late = max(sampler.samples[-quarter:]) / 1024
                peak = max(sampler.samples) / 1024
                print(
                    f"notifier main process RSS: peak {peak:.0f} MiB; "
                    f"first quarter {early:.0f} MiB, last quarter {late:.0f} MiB"
                )
            return 0 if complete and verified.ok else 1
        finally:
            sink.terminate()
            sink.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())

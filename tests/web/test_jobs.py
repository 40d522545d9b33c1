"""Background work in the console: results, errors as a page shows them, and a stop that
reaches the work and is waited for."""

from __future__ import annotations

import threading

from notifier.errors import CampaignError
from notifier.web.jobs import ENDED_KEPT, Job, Jobs

WAIT = 10.0


def test_a_job_runs_on_its_own_thread_and_keeps_its_result() -> None:
    jobs = Jobs()
    caller = threading.get_ident()
    job = jobs.start("import", "roster.csv", lambda j: threading.get_ident())
    jobs.stop_all(WAIT)
    assert not job.running and job.error is None
    assert job.result != caller
    assert jobs.get(job.job_id) is job
    assert jobs.latest("import", "roster.csv") is job


def test_a_users_mistake_is_the_jobs_error_with_its_hint_and_no_secret() -> None:
    def fails(job: Job) -> None:
        raise CampaignError("smtp://bob:hunter2@mail.example refused", hint="try again")

    jobs = Jobs()
    job = jobs.start("send", "c", fails)
    jobs.stop_all(WAIT)
    assert job.error is not None
    assert "hint: try again" in job.error
    assert "hunter2" not in job.error


def test_stopping_asks_the_work_and_waits_for_it() -> None:
    began = threading.Event()

    def waits_for_stop(job: Job) -> str:
        began.set()
        job.update(sent=1)
        assert job.stop_requested.wait(WAIT)
        return "stopped cleanly"

    jobs = Jobs()
    job = jobs.start("send", "c", waits_for_stop)
    assert began.wait(WAIT)
    assert [j.job_id for j in jobs.running("send", "c")] == [job.job_id]
    jobs.stop_all(WAIT)
    assert job.result == "stopped cleanly"
    assert jobs.running() == []
    assert job.snapshot()["progress"] == {"sent": 1}
    assert job.snapshot()["stop_requested"] is True


def test_a_long_running_console_keeps_only_the_latest_ended_jobs() -> None:
    jobs = Jobs()
    started = []
    for n in range(ENDED_KEPT + 10):
        job = jobs.start("check", f"c{n}", lambda j: None)
        jobs.stop_all(WAIT)
        started.append(job)
    kept = [j for j in started if jobs.get(j.job_id) is not None]
    assert len(kept) == ENDED_KEPT
    assert kept == started[-ENDED_KEPT:]  # the newest, the last one included
    assert jobs.latest("check", f"c{ENDED_KEPT + 9}") is started[-1]

"""Generated volunteers for the benchmarks: a quarter of them Japanese, exposures in turn,
one to five kinds of data held (none for database_only: they were never screened, and a
roster saying otherwise fails the campaign's check), published people's surnames
beginning with D, G, I or J as the campaign states. The same people every run."""

from __future__ import annotations

from collections.abc import Iterator

from notifier.volunteer import EXPOSURES, LATIN_FAMILY_NAME, Volunteer

DATA_HELD = ("id_documents", "photo", "health_questionnaire", "consent_form", "test_results")


def bench_volunteers(count: int) -> list[Volunteer]:
    return list(iter_bench_volunteers(count))


def iter_bench_volunteers(count: int) -> Iterator[Volunteer]:
    """The same people as `bench_volunteers`, one at a time: a million-person roster is
    written out without holding it."""
    for i in range(count):
        yield bench_volunteer(i)


def bench_volunteer(i: int) -> Volunteer:
    ja = i % 4 == 0
    address = f"volunteer{i}@example.{'jp' if ja else 'org'}"
    exposure = EXPOSURES[i % 3]
    held = () if exposure == "database_only" else DATA_HELD[: 1 + i % len(DATA_HELD)]
    published = exposure == "published"
    family, latin = ("伊藤", "Ito") if published else ("鈴木", "Suzuki")
    return Volunteer(
        volunteer_id=f"HMR-{i:06d}",
        email=address,
        email_ascii=address,
        family_name=family if ja else f"{'Davies' if published else 'Family'}{i}",
        given_name="一郎" if ja else "Alex",
        locale="ja" if ja else "en",
        exposure=exposure,
        data_held=held,
        extra={LATIN_FAMILY_NAME: latin} if ja else {},
    )

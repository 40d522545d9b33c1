"""Moments shown to people: one setting, one rule, every time labelled with its zone.

The ledger keeps every moment as ISO 8601 in UTC, to the microsecond, and JSON and CSV
give it so. Everything a person reads (terminal lines, the HTML report, the proof sheet,
errors) shows it with `shown_time`, in the one zone of the settings (`[display]
time_zone`, or `NOTIFIER_TIME_ZONE`; UTC by default), to the second and labelled
(`2020-03-25 10:04:07 GMT`), so one approval reads the same in `approve`, `status`, a
report and a refused send.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

DEFAULT_ZONE = "UTC"


def moment_of(at: str | datetime) -> datetime | None:
    """The moment an ISO 8601 text (or a datetime) names, in UTC where it names no zone;
    None if it is not one."""
    if isinstance(at, datetime):
        moment = at
    else:
        text = at[:-1] + "+00:00" if at.endswith("Z") else at
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def shown_time(
    at: str | datetime | None, zone: str = DEFAULT_ZONE, *, precision: str = "seconds"
) -> str:
    """A moment for people: in `zone`, labelled with the zone's abbreviation
    (`2020-03-25 10:04:07 GMT`); `precision` "minutes" leaves out the seconds (an hour of
    a timeline), "clock" the date too (a line of a running sink). "" for no time; text
    that is no moment is returned as it is."""
    if not at:
        return ""
    moment = moment_of(at)
    if moment is None:
        return str(at)
    local = moment.astimezone(ZoneInfo(zone))
    shape = {"seconds": "%Y-%m-%d %H:%M:%S", "minutes": "%Y-%m-%d %H:%M", "clock": "%H:%M:%S"}
    return f"{local.strftime(shape[precision])} {local.tzname() or zone}"

"""Schedule expressions of EventBridge and EventBridge Scheduler: rate(), cron(), at().

AWS's cron has six fields, `minutes hours day-of-month month day-of-week year`; one
of day-of-month and day-of-week must be `?`, day-of-week counts 1-7 from Sunday,
and both day fields have extras (`L`, `W`, `LW`, `L-n` in day-of-month; `nL` and
`n#k` in day-of-week). croniter reads five-field Unix cron (day-of-week 0-6 from
Sunday, `Ln` for the month's last weekday n, `n#k`), so an expression is translated
to that, and what croniter has no word for (W, L-n, the year) is checked here on
each of its candidates.
"""

from __future__ import annotations

import calendar
import datetime
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

_RATE = re.compile(r"^rate\((?P<value>[1-9]\d*) (?P<unit>minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((?P<fields>[^()]+)\)$")
_AT = re.compile(r"^at\((?P<when>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}
_MINUTES = re.compile(r"^(\*|\d{1,2}(-\d{1,2})?)(/\d{1,2})?(,(\*|\d{1,2}(-\d{1,2})?)(/\d{1,2})?)*$")
_DOM = re.compile(r"^(\?|\*|L|LW|L-\d{1,2}|\d{1,2}W|(\d{1,2}(-\d{1,2})?|\*)(/\d{1,2})?(,\d{1,2}(-\d{1,2})?)*)$")
_MONTH = re.compile(r"^(\*|[A-Za-z0-9]{1,3}(-[A-Za-z0-9]{1,3})?)(/\d{1,2})?(,[A-Za-z0-9]{1,3}(-[A-Za-z0-9]{1,3})?)*$")
_DOW = re.compile(r"^(\?|\*|L|[1-7A-Za-z]{1,3}L|[1-7A-Za-z]{1,3}#[1-5]|"
                  r"[1-7A-Za-z]{1,3}(-[1-7A-Za-z]{1,3})?(/\d)?(,[1-7A-Za-z]{1,3}(-[1-7A-Za-z]{1,3})?)*)$")
_YEAR = re.compile(r"^(\*|\d{4}(-\d{4})?)(/\d{1,3})?(,\d{4}(-\d{4})?)*$")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# Candidates croniter offers that the year or day-of-month checks may reject in a row
# before a schedule is deemed never to fire again (a year range in the past).
_MAX_CANDIDATES = 50_000


class InvalidExpression(ValueError):
    pass


@dataclass(frozen=True)
class Rate:
    seconds: int


@dataclass(frozen=True)
class Cron:
    unix: str
    day_of_month: str
    years: str


@dataclass(frozen=True)
class At:
    when: datetime.datetime  # naive, in the schedule's time zone


Expression = Rate | Cron | At


def parse(text: str, allow_at: bool = False) -> Expression:
    """The expression, or InvalidExpression."""
    rate = _RATE.match(text)
    if rate:
        value, unit = int(rate["value"]), rate["unit"]
        # AWS wants the singular for 1 and the plural otherwise.
        if (value == 1) != (not unit.endswith("s")):
            raise InvalidExpression(text)
        return Rate(value * _UNIT_S[unit.rstrip("s")])
    at = _AT.match(text)
    if at and allow_at:
        try:
            return At(datetime.datetime.fromisoformat(at["when"]))
        except ValueError:
            raise InvalidExpression(text) from None
    cron = _CRON.match(text)
    if cron:
        return _cron(text, cron["fields"])
    raise InvalidExpression(text)


def _cron(text: str, fields_text: str) -> Cron:
    fields = fields_text.split(" ")
    if len(fields) != 6:
        raise InvalidExpression(text)
    minutes, hours, dom, month, dow, year = fields
    checks = ((_MINUTES, minutes), (_MINUTES, hours), (_DOM, dom), (_MONTH, month),
              (_DOW, dow), (_YEAR, year))
    if not all(pattern.match(value) for pattern, value in checks):
        raise InvalidExpression(text)
    # Exactly one of the day fields is "?".
    if (dom == "?") == (dow == "?"):
        raise InvalidExpression(text)
    unix_dom = dom
    if dom == "?" or "W" in dom or dom.startswith("L-"):
        unix_dom = "*"
    unix = " ".join((minutes, hours, unix_dom, month, _unix_dow(text, dow)))
    try:
        croniter(unix)
        if not all(1970 <= y <= 2199 for y in _numbers(year)):
            raise InvalidExpression(text)
    except (ValueError, KeyError, TypeError):
        raise InvalidExpression(text) from None
    return Cron(unix, dom, year)


def _unix_dow(text: str, dow: str) -> str:
    if dow in ("?", "*"):
        return "*"
    if dow == "L":
        return "6"  # Saturday, the week's last day

    def day(token: str) -> str:
        if token.upper() in _DAY_NAMES:
            return token.upper()
        if not token.isdigit() or not 1 <= int(token) <= 7:
            raise InvalidExpression(text)
        return str(int(token) - 1)

    if dow.endswith("L"):
        return "L" + day(dow[:-1])
    if "#" in dow:
        first, nth = dow.split("#")
        return f"{day(first)}#{nth}"
    out = []
    for part in dow.split(","):
        step = ""
        if "/" in part:
            part, step = part.split("/")
            step = "/" + step
        out.append("-".join(day(t) for t in part.split("-")) + step)
    return ",".join(out)


def _numbers(field: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d{4}", field)]


def _year_matches(field: str, year: int) -> bool:
    if field == "*":
        return True
    for part in field.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/")
            step = int(step_text)
        if part == "*":
            low, high = 1970, 2199
        elif "-" in part:
            low, high = (int(n) for n in part.split("-"))
        else:
            low = int(part)
            high = low if step == 1 else 2199
        if low <= year <= high and (year - low) % step == 0:
            return True
    return False


def _day_matches(field: str, day: datetime.date) -> bool:
    """The day-of-month forms croniter lacks: W, LW, L-n."""
    last = calendar.monthrange(day.year, day.month)[1]
    if field == "LW":
        target = last
    elif field.startswith("L-"):
        return day.day == last - int(field[2:])
    elif field.endswith("W"):
        target = min(int(field[:-1]), last)
    else:
        return True
    # The weekday nearest to the target, within the same month.
    wanted = datetime.date(day.year, day.month, target)
    if wanted.weekday() == 5:
        wanted = wanted - datetime.timedelta(days=1) if target > 1 else wanted + datetime.timedelta(days=2)
    elif wanted.weekday() == 6:
        wanted = wanted + datetime.timedelta(days=1) if target < last else wanted - datetime.timedelta(days=2)
    return day == wanted


def next_cron(cron: Cron, after: datetime.datetime) -> datetime.datetime | None:
    """The first time after `after` (aware) the expression names, in after's zone;
    None if it names none (its years are over)."""
    it = croniter(cron.unix, after)
    max_year = max(_numbers(cron.years), default=2199) if cron.years != "*" else 2199
    for _ in range(_MAX_CANDIDATES):
        candidate: datetime.datetime = it.get_next(datetime.datetime)
        if candidate.year > max_year:
            return None
        if _year_matches(cron.years, candidate.year) and _day_matches(cron.day_of_month, candidate.date()):
            return candidate
    return None


def zone(name: str | None) -> datetime.tzinfo:
    if not name:
        return datetime.timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidExpression(name) from None


def next_fire(expression: Expression, after: datetime.datetime, tz: datetime.tzinfo,
              anchor: datetime.datetime | None = None) -> datetime.datetime | None:
    """When the expression fires next after `after` (aware, UTC out).

    A rate fires every period from its anchor (the rule's creation or the schedule's
    start date); a cron at the times it names in the zone tz; at() once."""
    if isinstance(expression, Rate):
        base = anchor or after
        period = datetime.timedelta(seconds=expression.seconds)
        if base > after:
            return base
        steps = int((after - base) / period) + 1
        return base + steps * period
    if isinstance(expression, At):
        when = expression.when.replace(tzinfo=tz)
        return when.astimezone(datetime.timezone.utc)
    found = next_cron(expression, after.astimezone(tz))
    return found.astimezone(datetime.timezone.utc) if found is not None else None

"""What a question says about when and by whom: the times and speakers it names.

"What did you tell me about the deploy key last week?" asks for an older turn
of a given speaker (the assistant) in a given period (the previous calendar
week). Recall matches these against the time and speaker of a turn
(kvchat.recall); this module only reads them from the question, in English
and Chinese, with the standard library.

Times are read relative to `now` and become periods of local calendar time,
[start, end): "yesterday", "the day before yesterday", "3 days ago", "two
weeks ago", "last week", "this month", "last year", "on Monday", "last
weekend", "on March 3", "3 March 2026", "in March", "in 2025", "2026-11-02",
and in Chinese 昨天, 前天, 三天前, 上周, 上个月, 去年, 周三, 上周末, 3月3日, 3月,
2025年. A date without a year is the latest such date not after today.
"last week" is the calendar week (Monday to Sunday) before this one; "two
weeks ago" is the seven days around the day two weeks back.

Speakers are the assistant ("you said", "you told me", "your advice", 你说过,
你提到, 你昨天说), the user ("I said", "I mentioned", 我说过, 我提到), or a
turn's stored name ("what did Lisa say"), for the names the caller knows.
A bare "你说" ("what do you say ...?") asks now, not about the past, and is
not read as a speaker.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

__all__ = ["Period", "periods", "speakers", "without"]


@dataclass(frozen=True)
class Period:
    start: datetime  # inclusive, aware
    end: datetime  # exclusive, aware
    words: str  # as the question put it
    span: tuple[int, int]  # where in the question

    def __contains__(self, when: datetime) -> bool:
        return self.start <= when < self.end


def _day_start(day: date, zone) -> datetime:
    return datetime.combine(day, time(), zone)


def _days(first: date, last: date, zone, words: str, span) -> Period:
    """The whole days from `first` to `last`, both included."""
    return Period(_day_start(first, zone), _day_start(last + timedelta(days=1), zone), words, span)


def _month(year: int, month: int) -> tuple[date, date]:
    first = date(year, month, 1)
    following = date(year + month // 12, month % 12 + 1, 1)
    return first, following - timedelta(days=1)


def _months_back(today: date, count: int) -> tuple[date, date]:
    index = today.year * 12 + today.month - 1 - count
    return _month(index // 12, index % 12 + 1)


def _latest(month: int, day: int, today: date) -> date | None:
    """The latest `month`/`day` not after today (None when no year has it)."""
    for year in range(today.year, today.year - 8, -1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate <= today:
            return candidate
    return None


def _latest_month(month: int, today: date) -> tuple[date, date]:
    return _month(today.year if month <= today.month else today.year - 1, month)


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


# -- numbers ---------------------------------------------------------------

_ENGLISH_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a few": 3,
    "several": 3,
}
_CHINESE_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


def _english_number(text: str) -> int:
    text = " ".join(text.lower().split())
    return int(text) if text.isdigit() else _ENGLISH_NUMBERS[text]


def _chinese_number(text: str) -> int:
    """Digits, or Chinese numerals up to 99 (三, 十五, 二十); 几 is a few (3)."""
    if text.isdigit():
        return int(text)
    if text == "几":
        return 3
    if "十" in text:
        tens, _, ones = text.partition("十")
        return _CHINESE_DIGITS.get(tens, 1) * 10 + _CHINESE_DIGITS.get(ones, 0)
    return _CHINESE_DIGITS[text]


# -- English ---------------------------------------------------------------

def _numbered(spellings: list[tuple[str, ...]], first: int) -> dict[str, int]:
    """Each spelling to the number of its group, counting from `first`."""
    return {name: number for number, names in enumerate(spellings, first) for name in names}


_MONTHS = _numbered(
    [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
     ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"),
     ("december", "dec")],
    1,
)
_WEEKDAYS = _numbered(
    [("monday", "mon"), ("tuesday", "tue", "tues"), ("wednesday", "wed"), ("thursday", "thu", "thur", "thurs"),
     ("friday", "fri"), ("saturday", "sat"), ("sunday", "sun")],
    0,
)
_MONTH = "(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_WEEKDAY = "(?P<weekday>" + "|".join(name for name in _WEEKDAYS if len(name) > 3) + ")"
_COUNT = r"(?P<count>\d{1,3}|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a\s+couple\s+of|a\s+few|several)"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"

_ENGLISH = [
    ("iso", rf"\b{_YEAR}-(?P<m>\d{{1,2}})-(?P<d>\d{{1,2}})\b"),
    ("days_back", r"\b(?:the\s+)?day\s+before\s+yesterday\b|\byesterday\b|\blast\s+night\b"
                  r"|\b(?:today|tonight|earlier\s+today|this\s+(?:morning|afternoon|evening))\b"),
    ("ago", rf"\b{_COUNT}\s+(?P<unit>day|week|month|year)s?\s+ago\b"),
    ("past", r"\b(?:the\s+)?(?:past|last)\s+(?P<count>\d{1,3}|two|three|four|five|six|seven|ten|few|couple\s+of)\s+"
             r"(?P<unit>day|week|month)s\b"),
    ("past_one", r"\b(?:the\s+|in\s+the\s+)?past\s+(?P<unit>week|month|year)\b"),
    ("relative", r"\b(?P<which>last|this|previous)\s+(?P<unit>week|month|year|weekend)\b"),
    ("month_day", rf"\b(?:on\s+)?{_MONTH}\s+{_DAY}\b(?:,?\s+{_YEAR}\b)?"),
    ("day_month", rf"\b(?:on\s+)?(?:the\s+)?{_DAY}\s+(?:of\s+)?{_MONTH}(?:,?\s+{_YEAR}\b)?"),
    ("month", rf"\b(?:in|during|last|this)\s+{_MONTH}(?:\s+{_YEAR})?\b"),
    ("year", rf"\b(?:in|during)\s+{_YEAR}\b"),
    ("weekday", rf"\b(?:(?P<which>last|this|on)\s+)?{_WEEKDAY}\b"),
]

# -- Chinese ---------------------------------------------------------------

_CHINESE_COUNT = r"(?P<count>\d{1,3}|[一二两三四五六七八九十几]{1,3})"
_CHINESE_WEEK = r"(?:周|星期|礼拜)"
_SMALL_NUMBER = r"\d{1,2}|[一二三四五六七八九十]{1,3}"  # a month or a day of it
_CHINESE = [
    ("iso", rf"{_YEAR}[-/](?P<m>\d{{1,2}})[-/](?P<d>\d{{1,2}})"),
    ("full_date", rf"(?:{_YEAR}年)?(?P<m>{_SMALL_NUMBER})月(?P<d>{_SMALL_NUMBER})[日号]"),
    ("days_back", r"大前天|前天|昨天|昨晚|昨日|昨儿|今天|今早|今晚|今日|今儿"),
    ("ago", rf"{_CHINESE_COUNT}(?P<unit>天|日|周|个?星期|个?礼拜|个月|年)(?:以|之)?前"),
    ("relative", r"(?P<which>上上|上|这|本|今|去|前)(?:个)?(?P<unit>周末|周|星期|礼拜|月|年)(?![一二三四五六日天])"),
    ("weekday", rf"(?P<which>上|这|本)?{_CHINESE_WEEK}(?P<weekday>[一二三四五六日天])(?![次个])"),
    ("month", rf"{_YEAR}年(?P<m>{_SMALL_NUMBER})月(?![\d日号])"
              rf"|(?<![\d一二三四五六七八九十几个])(?P<m2>{_SMALL_NUMBER})月份?(?![\d日号底初])"),
    ("year", rf"{_YEAR}年(?!\d|[一二三四五六七八九十]{{1,3}}月)"),
]

# A pattern is tried only on text holding one of its cues (lower-cased): a
# cue is a plain substring test, and most questions name no time, so this
# saves most of the ~20 regular-expression scans of every question, and the
# compiling of patterns that are never tried.
_DIGITS = tuple("0123456789")
_MONTH_CUES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_CUES = {
    "en": {
        "iso": _DIGITS, "days_back": ("yesterday", "night", "today", "tonight", "morning", "afternoon", "evening"),
        "ago": ("ago",), "past": ("past", "last"), "past_one": ("past",), "relative": ("last", "this", "previous"),
        "month_day": _MONTH_CUES, "day_month": _MONTH_CUES, "month": _MONTH_CUES, "year": _DIGITS,
        "weekday": ("day",),
    },
    "zh": {
        "iso": _DIGITS, "full_date": ("月",), "days_back": ("天", "昨", "今"), "ago": ("前",),
        "relative": ("周", "星期", "礼拜", "月", "年"), "weekday": ("周", "星期", "礼拜"), "month": ("月",),
        "year": ("年",),
    },
}
_PATTERNS = [
    (name, pattern, _CUES[language][name])
    for language, patterns in (("en", _ENGLISH), ("zh", _CHINESE))
    for name, pattern in patterns
]


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def periods(text: str, now: datetime) -> list[Period]:
    """The periods `text` names, in order of appearance; `now` is aware and
    its zone is the one whose calendar days are meant."""
    zone = now.tzinfo
    today = now.date()
    taken: list[tuple[int, int]] = []
    found: list[Period] = []
    lowered = text.lower()
    for name, pattern, cues in _PATTERNS:
        if not any(cue in lowered for cue in cues):
            continue
        for match in _compiled(pattern).finditer(text):
            span = match.span()
            if any(start < span[1] and span[0] < end for start, end in taken):
                continue
            try:
                days = _read(name, match, today)
            except (ValueError, KeyError, OverflowError):  # no such date: 2 月 30 日, 两两两天前
                continue
            if days is None:
                continue
            taken.append(span)
            found.append(_days(days[0], days[1], zone, match.group(), span))
    return sorted(found, key=lambda period: period.span)


def _read(name: str, match: re.Match, today: date) -> tuple[date, date] | None:
    """First and last day of what `match` (from pattern `name`) names."""
    groups = match.groupdict()
    if name in ("iso", "full_date", "month_day", "day_month"):
        if name in ("iso", "full_date"):
            month, day = _chinese_number(groups["m"]), _chinese_number(groups["d"])
        else:
            month, day = _MONTHS[groups["month"].lower()], int(groups["day"])
        if groups.get("year"):
            exact = date(int(groups["year"]), month, day)
            return exact, exact
        found = _latest(month, day, today)
        return None if found is None else (found, found)
    if name == "days_back":
        day = today - timedelta(days=_days_back(match.group()))
        return day, day
    if name == "ago":
        return _ago(_count(groups["count"]), _unit(groups["unit"]), today)
    if name == "past":
        count = _count(groups["count"].replace("few", "a few").replace("couple of", "a couple of"))
        first = {"day": today - timedelta(days=count), "week": today - timedelta(weeks=count),
                 "month": _months_back(today, count)[0]}[_unit(groups["unit"])]
        return first, today
    if name == "past_one":
        unit = groups["unit"].lower()
        first = {"week": today - timedelta(days=7), "month": today - timedelta(days=31),
                 "year": today - timedelta(days=365)}[unit]
        return first, today
    if name == "relative":
        return _relative(groups["which"].lower(), _unit(groups["unit"]), today)
    if name == "weekday":
        return _weekday(groups, today)
    if name == "month":
        if groups.get("month"):
            month = _MONTHS[groups["month"].lower()]
            year = groups.get("year")
            return _month(int(year), month) if year else _latest_month(month, today)
        month = _chinese_number(groups.get("m") or groups["m2"])
        if not 1 <= month <= 12:
            return None
        year = groups.get("year")
        return _month(int(year), month) if year else _latest_month(month, today)
    if name == "year":
        year = int(groups["year"])
        return date(year, 1, 1), date(year, 12, 31)
    raise AssertionError(name)


def _days_back(words: str) -> int:
    words = " ".join(words.lower().split())
    if words.endswith("before yesterday") or words == "前天":
        return 2
    if words == "大前天":
        return 3
    return 1 if words.startswith(("yesterday", "last night", "昨")) else 0


def _count(text: str) -> int:
    text = text.strip()
    try:
        return _english_number(text)
    except KeyError:
        return _chinese_number(text)


def _unit(text: str) -> str:
    text = text.lower()
    for unit, spellings in (("day", ("day", "天", "日")), ("weekend", ("weekend", "周末")),
                            ("week", ("week", "周", "星期", "礼拜")), ("month", ("month", "月")),
                            ("year", ("year", "年"))):
        if any(spelling in text for spelling in spellings):
            return unit
    raise KeyError(text)


def _ago(count: int, unit: str, today: date) -> tuple[date, date]:
    if unit == "day":
        day = today - timedelta(days=count)
        return day, day
    if unit == "week":
        # "two weeks ago" is rarely the exact day: the week around it.
        middle = today - timedelta(weeks=count)
        return middle - timedelta(days=3), middle + timedelta(days=3)
    if unit == "month":
        return _months_back(today, count)
    return date(today.year - count, 1, 1), date(today.year - count, 12, 31)


def _relative(which: str, unit: str, today: date) -> tuple[date, date]:
    back = {"last": 1, "previous": 1, "上": 1, "去": 1, "上上": 2, "前": 2}.get(which, 0)
    if unit in ("week", "weekend"):
        monday = _week_start(today) - timedelta(weeks=back)
        if unit == "weekend":
            return monday + timedelta(days=5), monday + timedelta(days=6)
        return monday, min(monday + timedelta(days=6), today)
    if unit == "month":
        return _months_back(today, back)
    if unit == "year":
        return date(today.year - back, 1, 1), date(today.year - back, 12, 31)
    return today - timedelta(days=back), today - timedelta(days=back)


_CHINESE_WEEKDAYS = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}


def _weekday(groups: dict, today: date) -> tuple[date, date]:
    name = groups["weekday"].lower()
    weekday = _WEEKDAYS[name] if name in _WEEKDAYS else _CHINESE_WEEKDAYS[name]
    which = (groups.get("which") or "").lower()
    if which in ("last", "上"):
        day = _week_start(today) - timedelta(weeks=1) + timedelta(days=weekday)
    elif which in ("this", "这", "本"):
        day = _week_start(today) + timedelta(days=weekday)
    else:
        # "on Monday": the latest Monday before today.
        day = today - timedelta(days=(today.weekday() - weekday - 1) % 7 + 1)
    return day, day


# -- speakers --------------------------------------------------------------

# What stands in for the words of a time the question named ("你昨天说过",
# "Bart yesterday said"), so that they neither hide nor make a speaker.
_SKIPPED = "\ue000"
_SAID = r"said|told|mentioned|suggested|recommended|wrote|answered|replied|promised|explained|advised"
_HAVE = r"(?:'ve|\s+have|\s+had)?\s+(?:(?:just|once|already|also|never|ever|previously|earlier|first)\s+)?"
# Between 你/我 and the verb: a time or an adverb (你昨天说, 你之前提到), never
# another person or a wish (你觉得我说, 你想说 ask about now).
_BETWEEN = rf"(?:[^\s\W你我他她想要能会可]|{_SKIPPED})"


def _chinese_speaker(pronoun: str) -> str:
    # A bare 你说 asks now ("你说我该怎么办?"): it needs a word between
    # (你昨天说) or a past marker after (你说过, 你说的).
    return (
        rf"{pronoun}(?:{_BETWEEN}{{1,6}}?(?:说|讲)|(?:说|讲)(?:过|的)"
        rf"|{_BETWEEN}{{0,6}}?(?:提到|提过|告诉|建议|推荐|回答|答应|问过))"
    )


_ROLE_PATTERNS = [
    ("assistant", re.compile(
        rf"\byou{_HAVE}(?:{_SAID})\b|\bdid\s+you\s+(?:\w+\s+)?(?:say|tell|mention|suggest|recommend)\b"
        r"|\byour\s+(?:answer|reply|advice|suggestion|recommendation|words)\b", re.IGNORECASE)),
    ("user", re.compile(
        rf"\bi{_HAVE}(?:{_SAID}|asked)\b|\bdid\s+i\s+(?:\w+\s+)?(?:say|tell|mention|ask)\b"
        r"|\bmy\s+(?:question|message|words)\b", re.IGNORECASE)),
    ("assistant", re.compile(_chinese_speaker("你"))),
    ("user", re.compile(_chinese_speaker("我"))),
]


@dataclass(frozen=True)
class Speaker:
    role: str | None  # "user" or "assistant", for role words
    name: str | None  # a stored name, when the question used it
    words: str


def speakers(text: str, names=(), periods: list[Period] = ()) -> list[Speaker]:
    """The speakers `text` refers to: by role words, or by one of `names`
    (whole words; a Chinese name anywhere). The words of `periods` (found in
    `text`) count as a time between a speaker and a verb (你昨天说过)."""
    text = without(text, [period.span for period in periods], _SKIPPED)
    found = [Speaker(role, None, match.group()) for role, pattern in _ROLE_PATTERNS for match in pattern.finditer(text)]
    lowered = text.lower()
    for name in names:
        if not name:
            continue
        if name.isascii():
            # Not \b: a Chinese character right after the name (Lisa说) is a word character too.
            match = re.search(rf"(?<![a-z0-9]){re.escape(name.lower())}(?![a-z0-9])", lowered)
            if match:
                found.append(Speaker(None, name, text[match.start() : match.end()]))
        elif name.lower() in lowered:
            found.append(Speaker(None, name, name))
    return found


def without(text: str, spans, filler: str = " ") -> str:
    """`text` with each of the given (start, end) spans replaced by `filler`."""
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + filler + text[end:]
    return text

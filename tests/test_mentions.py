"""Reading when and by whom from a question: the periods and speakers recall
matches against older turns (kvchat.mentions)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvchat.mentions import periods, speakers

# A Thursday evening, in a zone east of UTC: days are the zone's days.
ZONE = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 26, 21, 30, tzinfo=ZONE)


def days(text: str) -> list[tuple[str, str, str]]:
    """(words, first day, last day) of each period in `text`."""
    return [
        (p.words, p.start.date().isoformat(), (p.end - timedelta(microseconds=1)).date().isoformat())
        for p in periods(text, NOW)
    ]


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("what did you say yesterday?", "2026-11-25", "2026-11-25"),
        ("we spoke about it the day before yesterday", "2026-11-24", "2026-11-24"),
        ("earlier today", "2026-11-26", "2026-11-26"),
        ("3 days ago", "2026-11-23", "2026-11-23"),
        ("two weeks ago", "2026-11-09", "2026-11-15"),
        ("last week", "2026-11-16", "2026-11-22"),
        ("this week", "2026-11-23", "2026-11-26"),
        ("last weekend", "2026-11-21", "2026-11-22"),
        ("last month", "2026-10-01", "2026-10-31"),
        ("last year", "2025-01-01", "2025-12-31"),
        ("in the past 3 days", "2026-11-23", "2026-11-26"),
        ("on Monday", "2026-11-23", "2026-11-23"),
        ("on Thursday", "2026-11-19", "2026-11-19"),  # today is Thursday: the one before
        ("last Friday", "2026-11-20", "2026-11-20"),
        ("on March 3", "2026-03-03", "2026-03-03"),
        ("on December 25", "2025-12-25", "2025-12-25"),  # no year: the latest not after today
        ("the 3rd of March 2024", "2024-03-03", "2024-03-03"),
        ("in March", "2026-03-01", "2026-03-31"),
        ("in 2025", "2025-01-01", "2025-12-31"),
        ("on 2026-11-02", "2026-11-02", "2026-11-02"),
        ("昨天你说过什么", "2026-11-25", "2026-11-25"),
        ("前天", "2026-11-24", "2026-11-24"),
        ("大前天", "2026-11-23", "2026-11-23"),
        ("三天前", "2026-11-23", "2026-11-23"),
        ("两个星期前", "2026-11-09", "2026-11-15"),
        ("上周", "2026-11-16", "2026-11-22"),
        ("上个月", "2026-10-01", "2026-10-31"),
        ("去年", "2025-01-01", "2025-12-31"),
        ("周一", "2026-11-23", "2026-11-23"),
        ("上周三", "2026-11-18", "2026-11-18"),
        ("上周末", "2026-11-21", "2026-11-22"),
        ("3月3日", "2026-03-03", "2026-03-03"),
        ("2024年3月3号", "2024-03-03", "2024-03-03"),
        ("十一月", "2026-11-01", "2026-11-30"),
        ("2025年", "2025-01-01", "2025-12-31"),
    ],
)
def test_a_named_time_is_a_period_of_local_days(text, first, last):
    [(words, start, end)] = days(text)
    assert (start, end) == (first, last)
    assert words in text


def test_periods_are_in_the_zone_of_now_and_in_order():
    [week, day] = periods("last week, or was it yesterday?", NOW)
    assert day.start == datetime(2026, 11, 25, tzinfo=ZONE) and day.end == datetime(2026, 11, 26, tzinfo=ZONE)
    assert datetime(2026, 11, 25, 15, 30, tzinfo=timezone.utc) in day  # 23:30 on the 25th there
    assert datetime(2026, 11, 25, 16, 30, tzinfo=timezone.utc) not in day  # 00:30 on the 26th there
    assert week.words == "last week"


@pytest.mark.parametrize(
    "text",
    [
        "how do I rotate the deploy key?",
        "我们一周一次开会",  # 一周一次: once a week, not a Monday
        "may I ask something?",
        "it costs 2025 dollars",
        "the sun is out",
        "第三个月",
    ],
)
def test_text_that_names_no_time(text):
    assert days(text) == []


@pytest.mark.parametrize(
    ("text", "role"),
    [
        ("what did you say about the trip?", "assistant"),
        ("you told me to use helix", "assistant"),
        ("you've already mentioned it", "assistant"),
        ("what was your advice?", "assistant"),
        ("I said I would come", "user"),
        ("did I mention my cat?", "user"),
        ("你说过关于旅行的什么？", "assistant"),
        ("你之前提到的那本书", "assistant"),
        ("我说过我会来", "user"),
        ("我提到过我的猫", "user"),
    ],
)
def test_role_words_name_a_speaker(text, role):
    assert [s.role for s in speakers(text)] == [role]


@pytest.mark.parametrize(
    "text",
    [
        "你说我该怎么办？",  # "what do you say I should do": asks now
        "你想说什么",
        "what do you think about it?",
        "tell me about the trip",
    ],
)
def test_a_question_about_now_names_no_speaker(text):
    assert speakers(text) == []


def test_a_stored_name_names_a_speaker_in_either_script():
    assert [s.name for s in speakers("what did Lisa say about the trip?", ["Lisa", "Bart"])] == ["Lisa"]
    assert [s.name for s in speakers("Lisa说过关于旅行的什么？", ["Lisa"])] == ["Lisa"]
    assert [s.name for s in speakers("小明昨天说了什么", ["小明"])] == ["小明"]
    assert speakers("Lisabeth was there", ["Lisa"]) == []


def test_a_time_between_speaker_and_verb_still_names_the_speaker():
    text = "你2026-10-17说过关于旅行的什么？"
    assert speakers(text) == []  # the date hides it ...
    assert [s.role for s in speakers(text, periods=periods(text, NOW))] == ["assistant"]  # ... unless read as one
    text = "Bart40天前说过什么"
    assert [s.name for s in speakers(text, ["Bart"], periods(text, NOW))] == ["Bart"]


@given(text=st.text(max_size=60) | st.lists(st.sampled_from(
    ["两两两天前", "13月", "2月30日", "2026-13-45", "on February 30", "999 years ago", "上上周", "周", "你", "说过",
     "yesterday", "last", "week", " ", "3", "月", "日", "年", "前", "Lisa"]), max_size=8).map("".join))
def test_any_text_reads_without_error(text):
    for period in periods(text, NOW):
        assert period.start < period.end and period.words == text[period.span[0]:period.span[1]]
    speakers(text, ["Lisa", "小明"], periods(text, NOW))

#!/usr/bin/env python3
"""Recall of older turns by who said them and when: kvchat with and without
the speaker and time signals of kvchat.recall.

MADial-Bench has no labels for turn recall, so this benchmark makes its own,
by rules fixed here (none of them looks at how kvchat ranks):

The store. For each language, all 80 MADial dialogues (../shared/data/madial,
whole dialogues, speaker tags parsed as bench/recall_madial.py does) become
one long session of a household in which Bart and Lisa both talk to the
assistant, in file order, two dialogues a day (09:00 and 19:00 local time,
one minute between turns), the last two yesterday. Turns carry the speaker's
name (Bart, Lisa, Assistant) and are imported through kvchat's own import
path (kvchat.transfer.import_turns) into a fresh database.

The questions. With a seeded random generator, for every dialogue outside the
recent window of the prompt (the turns a prompt already holds are not
recalled), one user turn and one assistant turn are targets. The topic is two
words drawn from the target's own text: English words of 4 or more letters
that are not stopwords nor names, or, in Chinese, pairs of adjacent Han
characters neither of which is a grammatical stop character (kvchat.
textsearch's lists), joined by "and" (和). Targets with fewer than two such
words are skipped. Each target is asked about in four forms:

  plain    What was said about {topic}?               关于{topic}聊过什么？
  speaker  What did {who} say about {topic}?          {who}说过关于{topic}的什么？
  time     What was said about {topic} {when}?        {when}关于{topic}聊过什么？
  both     What did {who} say about {topic} {when}?   {who}{when}说过关于{topic}的什么？

{who} is the user's name for a user turn and "you" (你) for the assistant's.
{when} is drawn between an exact form and a coarse one. Exact: yesterday /
the day before yesterday (昨天/前天), a weekday for 3-6 days back (on
Tuesday/周二), else in turn "on March 3" (3月3日), "12 days ago" (12天前) or
"on 2026-10-02" (2026-10-02). Coarse: "last week"/"this week" (上周/这周)
when the day is in that calendar week, else "N weeks ago" (N周前), N the
whole number of weeks back rounded.

The measure. Each question goes through kvchat.prompt.build_prompt, as
`kvchat ask` and `kvchat recall` build a prompt (the question follows the
session's last turn; the recent window and the context are kvchat's own
choice). A question is a hit at k when the target turn is one of the turns of
the first k recalled items (an item is a turn with its partner in the
exchange). Reported: hit@1, hit@3, hit@5 and the mean reciprocal rank, by
form, for each setting of the signals.

The date parser and the question templates are both written by us, so the
"time" and "both" rows measure how much a correctly read date or speaker
helps ranking, not how well free text is read; the "plain" rows show whether
the signals cost anything when a question names neither.

    python bench/recall_turns.py                 # both languages
    python bench/recall_turns.py --lang zh --show 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from recall_madial import DEFAULT_DATA, USERS, parse_utterance, read_jsonl

from kvchat import recall, textsearch
from kvchat.prompt import PromptOptions, build_prompt
from kvchat.store import Store
from kvchat.tokens import count_tokens
from kvchat.transfer import import_turns

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "recall_turns.json"
MODEL = "gpt-4o-mini"
SEED = 20261126
SESSION = "household"
KS = (1, 3, 5)
TOPIC_WORDS = 2

# Settings of the signals: (SPEAKER_WEIGHT, TIME_WEIGHT, MENTION_CONTEXT).
SETTINGS = {
    "text only": (0.0, 0.0, 1.0),
    "speaker 0.5": (0.5, 0.0, 1.0),
    "time 1": (0.0, 1.0, 1.0),
    "speaker 0.5 + time 1": (0.5, 1.0, 1.0),
    "speaker 0.25 + time 0.5": (0.25, 0.5, 1.0),
    "speaker 0.5 + time 1, context x0.5 on a mention": (0.5, 1.0, 0.5),
    "speaker 0.5 + time 1, no context on a mention (now)": (0.5, 1.0, 0.0),
    "speaker 1 + time 10, no context on a mention": (1.0, 10.0, 0.0),
}

_ENGLISH_WORD = re.compile(r"[A-Za-z]{4,}")
_HAN_PAIR = re.compile(r"(?=([\u4e00-\u9fff]{2}))")
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_CHINESE_WEEKDAYS = "一二三四五六日"
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def dialogues(data: Path, lang: str) -> list[list]:
    """Every dialogue as its list of utterances (speaker tags parsed)."""
    parsed = []
    for record in read_jsonl(data / lang / "dialogues.jsonl"):
        name, previous, utterances = USERS[int(record["user-id"])], None, []
        for index, raw in enumerate(record["dialogue"]):
            utterance = parse_utterance(raw, index, previous, name)
            if utterance is not None:
                utterances.append(utterance)
                previous = utterance.role
        parsed.append(utterances)
    return parsed


def day_of(number: int, count: int, today) -> datetime:
    """Two dialogues a day, the last two yesterday: 09:00 and 19:00 local."""
    days_back = (count - 1 - number) // 2 + 1
    day = today - timedelta(days=days_back)
    hour = 9 if number % 2 == 0 else 19
    return datetime(day.year, day.month, day.day, hour).astimezone()


def turn_records(all_dialogues: list[list], today) -> list[dict]:
    records = []
    for number, utterances in enumerate(all_dialogues):
        start = day_of(number, len(all_dialogues), today)
        for position, utterance in enumerate(utterances):
            records.append({
                "session": SESSION, "role": utterance.role, "name": utterance.name, "content": utterance.content,
                "created_at": (start + timedelta(minutes=position)).isoformat(), "ref": f"d{number}-{utterance.index}",
            })
    return records


def topic(text: str, lang: str, names: set[str], rng: random.Random) -> str | None:
    if lang == "en":
        words = [w for w in _ENGLISH_WORD.findall(text)
                 if w.lower() not in textsearch.ENGLISH_STOPWORDS and w.lower() not in names]
    else:
        words = [pair for pair in _HAN_PAIR.findall(text)
                 if not any(ch in textsearch.CHINESE_STOP_CHARS for ch in pair)]
    words = sorted(set(words))
    if len(words) < TOPIC_WORDS:
        return None
    chosen = rng.sample(words, TOPIC_WORDS)
    return " and ".join(chosen) if lang == "en" else "和".join(chosen)


def when(day, today, lang: str, rng: random.Random) -> str:
    back = (today - day).days
    this_monday = today - timedelta(days=today.weekday())
    if rng.random() < 0.5:  # an exact day
        if back == 1:
            return "yesterday" if lang == "en" else "昨天"
        if back == 2:
            return "the day before yesterday" if lang == "en" else "前天"
        if back <= 6:
            return f"on {_WEEKDAYS[day.weekday()]}" if lang == "en" else f"周{_CHINESE_WEEKDAYS[day.weekday()]}"
        form = rng.randrange(3)
        if form == 0:
            return f"on {_MONTHS[day.month - 1]} {day.day}" if lang == "en" else f"{day.month}月{day.day}日"
        if form == 1:
            return f"{back} days ago" if lang == "en" else f"{back}天前"
        return f"on {day.isoformat()}" if lang == "en" else day.isoformat()
    if day >= this_monday:
        return "this week" if lang == "en" else "这周"
    if day >= this_monday - timedelta(days=7):
        return "last week" if lang == "en" else "上周"
    weeks = round(back / 7)
    return f"{weeks} weeks ago" if lang == "en" else f"{weeks}周前"


def question(form: str, lang: str, subject: str, who: str, when_words: str) -> str:
    if lang == "en":
        return {
            "plain": f"What was said about {subject}?",
            "speaker": f"What did {who} say about {subject}?",
            "time": f"What was said about {subject} {when_words}?",
            "both": f"What did {who} say about {subject} {when_words}?",
        }[form]
    return {
        "plain": f"关于{subject}聊过什么？",
        "speaker": f"{who}说过关于{subject}的什么？",
        "time": f"{when_words}关于{subject}聊过什么？",
        "both": f"{who}{when_words}说过关于{subject}的什么？",
    }[form]


FORMS = ("plain", "speaker", "time", "both")


def build(lang: str, data: Path, workdir: Path):
    """The store and the questions of one language."""
    all_dialogues = dialogues(data, lang)
    today = datetime.now().astimezone().date()
    store = Store(f"sqlite:///{workdir / f'{lang}.db'}")
    import_turns(store, (json.dumps(r, ensure_ascii=False) for r in turn_records(all_dialogues, today)), model=MODEL)
    session = store.session(SESSION)
    by_ref = {turn.ref: turn for _, turn in store.all_turns(session.id)}
    window_start = prompt_for(store, session.id, "?").recent[0].id
    rng = random.Random(f"{SEED}-{lang}")
    names = {name.lower() for name in USERS.values()} | {"assistant"}
    questions = []
    for number, utterances in enumerate(all_dialogues):
        day = day_of(number, len(all_dialogues), today).date()
        for role in ("user", "assistant"):
            spoken = [u for u in utterances if u.role == role and by_ref[f"d{number}-{u.index}"].id < window_start]
            if not spoken:
                continue
            target = rng.choice(spoken)
            subject = topic(target.content, lang, names, rng)
            if subject is None:
                continue
            who = target.name if role == "user" else ("you" if lang == "en" else "你")
            when_words = when(day, today, lang, rng)
            for form in FORMS:
                questions.append({
                    "form": form, "question": question(form, lang, subject, who, when_words),
                    "target": by_ref[f"d{number}-{target.index}"].id, "ref": f"d{number}-{target.index}",
                    "role": role,
                })
    return store, session.id, questions


def prompt_for(store: Store, session_id: int, text: str):
    options = PromptOptions(model=MODEL, recall_limit=10, recall_tokens=100_000, facts=False)
    return build_prompt(store, question=text, question_tokens=count_tokens(text, MODEL), session_id=session_id,
                        before_id=None, options=options)


def measure(store: Store, session_id: int, questions: list[dict]) -> dict:
    ranks, seconds = [], 0.0
    for item in questions:
        start = time.perf_counter()
        memories = prompt_for(store, session_id, item["question"]).memories
        seconds += time.perf_counter() - start
        rank = next((position for position, memory in enumerate(memories, 1)
                     if any(turn.id == item["target"] for turn in memory.turns)), None)
        ranks.append(rank)
    result = {}
    for form in FORMS:
        chosen = [rank for rank, item in zip(ranks, questions) if item["form"] == form]
        result[form] = {
            "n": len(chosen),
            **{f"hit@{k}": sum(1 for r in chosen if r is not None and r <= k) / len(chosen) for k in KS},
            "MRR": sum(1 / r for r in chosen if r is not None) / len(chosen),
        }
    result["ms_per_question"] = 1000 * seconds / len(questions)
    result["ranks"] = ranks
    return result


def table(results: dict) -> str:
    head = ["lang", "signals", "form", "n", *(f"hit@{k}" for k in KS), "MRR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for (lang, setting), result in results.items():
        for form in FORMS:
            row = result[form]
            lines.append("| " + " | ".join([lang, setting, form, str(row["n"]),
                                            *(f"{row[f'hit@{k}']:.3f}" for k in KS), f"{row['MRR']:.3f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kvchat's recall of older turns by speaker and time.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--lang", choices=("en", "zh", "both"), default="both")
    parser.add_argument("--settings", nargs="*", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--show", type=int, default=0, metavar="N", help="print N questions of each form")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    langs = ["en", "zh"] if args.lang == "both" else [args.lang]
    results, shown = {}, {}
    with tempfile.TemporaryDirectory(prefix="recall-turns-") as workdir:
        os.environ["KVCHAT_HOME"] = workdir
        for lang in langs:
            store, session_id, questions = build(lang, args.data, Path(workdir))
            note(f"{lang}: {len(questions)} questions")
            for form in FORMS:
                for item in [q for q in questions if q["form"] == form][: args.show]:
                    note(f"  {form:<8} {item['ref']:>8} {item['role']:<9} {item['question']}")
            shown[lang] = questions
            for setting in args.settings:
                recall.SPEAKER_WEIGHT, recall.TIME_WEIGHT, recall.MENTION_CONTEXT = SETTINGS[setting]
                results[(lang, setting)] = measure(store, session_id, questions)
                note(f"  {setting}: {results[(lang, setting)]['ms_per_question']:.1f} ms a question")
            store.close()
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {name: dict(zip(("speaker_weight", "time_weight", "mention_context"), SETTINGS[name])) for name in args.settings},
        "results": [{"lang": lang, "signals": setting, **result} for (lang, setting), result in results.items()],
        "questions": shown,
    }, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    note(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

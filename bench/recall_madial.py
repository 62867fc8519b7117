#!/usr/bin/env python3
"""Memory recall of kvchat on MADial-Bench (development set), English and Chinese.

What it measures (see ../shared/data/madial/README.md for the data and metric):

For each language and each of the two users (Bart = 1, Lisa = 2) the benchmark
makes a fresh, temporary KVCHAT_HOME and talks to kvchat only through its
installed command line:

1. `kvchat facts import FILE` loads the user's memory bank, one fact per memory
   (key: see `memory_key`; value: the event text; ref: the memory id;
   created_at: the memory's date), then `kvchat facts --json` checks what was
   stored.
2. `kvchat import FILE` loads every dialogue of the user as a session "d<line>",
   with the turns before the dialogue's first test turn, except the last user
   utterance before it: that utterance is the query.
3. One `kvchat recall --queries FILE --json --limit 10 --recall-tokens 100000`
   process answers every query of the user; the ranked list of a dialogue is
   the refs of the "fact" items, in order. Time per query: the wall time of
   that process divided by the number of queries ("incl. start"); the same
   after subtracting the wall time of the same command on an empty queries
   file, i.e. process start and opening the database ("ms/query"); and the
   mean gap between consecutive result lines, which also leaves out what the
   first query initialises lazily, such as loading the tiktoken encoding
   ("steady"; median and p95 go to the JSON).

Metrics, over all dialogues of a language, for k = 1, 3, 5, 10:
hit@k (share of dialogues with at least one relevant memory in the top k) and
Recall@k (mean of |top k ∩ relevant| / |relevant|), as the data README defines.

Baselines, computed here with the stdlib sqlite3 module (no kvchat): one FTS5
table per user holding "scene emotion event" of each memory, ranked by bm25;
the query is an OR of the quoted, de-duplicated tokens of the text (nothing
else dropped). English uses tokenize='porter unicode61'; Chinese is run twice,
with unicode61 as it is and with text pre-segmented into overlapping character
bigrams (index and query alike). Each baseline is queried with the last user
utterance (the same text kvchat gets) and with the authors' query, the whole
dialogue before the test turn: "".join(dialogue[:test_turn]).

Output: a Markdown table on stdout, the numbers (and every ranked list) as JSON
in bench/results/recall_madial.json, progress and data warnings on stderr.

    python bench/recall_madial.py                  # both languages
    python bench/recall_madial.py --lang zh --show 3 --keep
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "madial"
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "recall_madial.json"

USERS = {1: "Bart", 2: "Lisa"}
KS = (1, 3, 5, 10)
LIMIT = 10  # --limit passed to kvchat recall, and the baselines' cut-off
RECALL_TOKENS = 100_000  # large enough that the token budget never cuts the top 10


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The data
# --------------------------------------------------------------------------


@dataclass
class Memory:
    id: int
    user: int
    time: str  # YYYY-MM-DD
    scene: str
    emotion: str
    event: str


@dataclass
class Utterance:
    index: int  # position in the dialogue's list (0 is <BOD>)
    role: str  # "user" or "assistant"
    name: str  # Bart, Lisa or Assistant
    content: str  # without speaker tag and surrounding quotes
    tagged: bool  # False: the role was inferred (see parse_utterance)


@dataclass
class Dialogue:
    line: int  # 1-based line number in dialogues.jsonl: the dialogue's id here
    user: int
    relevant: list[int]
    test_turn: int  # the first test turn: where recall is evaluated
    history: list[Utterance]  # imported as the session (everything before the test turn but the query)
    query: Utterance  # the last user utterance before the test turn
    authors_query: str  # "".join(dialogue[:test_turn]), the authors' query
    notes: list[str] = field(default_factory=list)

    @property
    def session(self) -> str:
        return f"d{self.line}"


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_memories(path: Path) -> dict[int, Memory]:
    memories = {}
    for record in read_jsonl(path):
        memory = Memory(
            id=int(record["id"]), user=int(record["user-id"]), time=record["time"],
            scene=record["scene"], emotion=record["emotion"], event=record["event"],
        )
        if memory.id in memories:
            raise SystemExit(f"{path}: memory id {memory.id} appears twice")
        memories[memory.id] = memory
    return memories


# A speaker tag: "<Bart>: ", "<Assistant>:" (Chinese files, no space), full-width
# colon tolerated. Leading spaces are stripped before matching (" <Bart>:..." in
# a few Chinese dialogues).
_TAG = re.compile(r"<\s*([A-Za-z][A-Za-z .'-]{0,38}?)\s*>\s*[:：]\s*")
_MARKER = re.compile(r"<\s*(BOD|EOD)\s*>", re.IGNORECASE)
# An end marker glued to the end of an utterance ('..."<eod' in dialogue 31).
_TRAILING_EOD = re.compile(r"\s*<\s*/?\s*eod\s*>?\s*$", re.IGNORECASE)
_QUOTES = "\"“”"


def _strip_quotes(text: str) -> str:
    """Remove one pair of surrounding quotes, also when one side is missing
    (a few utterances open a quote and never close it, or close one never opened);
    quotes inside the text ("The Lion King") stay."""
    opened = text[:1] in _QUOTES
    if opened:
        text = text[1:]
    quote_count = sum(text.count(q) for q in _QUOTES)
    if text[-1:] in _QUOTES and (opened or quote_count % 2 == 1):
        text = text[:-1]
    return text.strip()


def parse_utterance(raw: str, index: int, previous_role: str | None, user_name: str) -> Utterance | None:
    """One dialogue item as an utterance, or None for <BOD>/<EOD>."""
    text = raw.strip()
    if _MARKER.fullmatch(text):
        return None
    text = _TRAILING_EOD.sub("", text)
    match = _TAG.match(text)
    if match:
        name = match.group(1).strip()
        body = text[match.end():]
        if name.lower() == "assistant":
            role, name = "assistant", "Assistant"
        elif name.lower() == user_name.lower():
            role, name = "user", user_name
        else:
            raise ValueError(f"item {index}: unknown speaker <{name}>")
        tagged = True
    else:
        # No speaker tag: some English utterances are bare quotes ("...") or wrapped
        # in angle brackets like a tag with no colon (<Pizza is a great choice!...>).
        # The dialogues alternate user/assistant (they start with the user), so the
        # role is the opposite of the previous utterance's. Within the part used
        # here (before the first test turn) the tagged utterances never break the
        # alternation; the few breaks in the Chinese file all come later.
        body = text
        if body.startswith("<") and body.endswith(">"):
            body = body[1:-1]
        role = "assistant" if previous_role == "user" else "user"
        name = "Assistant" if role == "assistant" else user_name
        tagged = False
    content = _strip_quotes(body.strip())
    if not content:
        raise ValueError(f"item {index}: empty utterance")
    return Utterance(index=index, role=role, name=name, content=content, tagged=tagged)


def parse_dialogue(record: dict, line: int) -> Dialogue:
    user = int(record["user-id"])
    user_name = USERS[user]
    items = record["dialogue"]
    test_turn = int(record["test-turn"][0])
    notes = []
    utterances: list[Utterance] = []
    previous_role = None
    for index, raw in enumerate(items[:test_turn]):
        utterance = parse_utterance(raw, index, previous_role, user_name)
        if utterance is None:
            continue
        if not utterance.tagged:
            notes.append(f"item {index} has no speaker tag; taken as {utterance.role} by alternation")
        elif previous_role == utterance.role:
            notes.append(f"item {index}: {utterance.role} speaks twice in a row")
        utterances.append(utterance)
        previous_role = utterance.role
    users = [i for i, u in enumerate(utterances) if u.role == "user"]
    if not users:
        raise ValueError("no user utterance before the first test turn")
    query_position = users[-1]
    if query_position != len(utterances) - 1:
        notes.append("the last user utterance is not right before the test turn")
    test_item = items[test_turn] if test_turn < len(items) else ""
    if not _TAG.match(test_item.strip()):
        notes.append(f"test turn {test_turn} has no speaker tag")
    elif not _TAG.match(test_item.strip()).group(1).strip().lower() == "assistant":
        notes.append(f"test turn {test_turn} is not an assistant turn")
    return Dialogue(
        line=line, user=user, relevant=[int(r) for r in record["relevant-id"]], test_turn=test_turn,
        history=utterances[:query_position] + utterances[query_position + 1:],
        query=utterances[query_position], authors_query="".join(items[:test_turn]), notes=notes,
    )


def load_dialogues(path: Path, memories: dict[int, Memory], lang: str) -> list[Dialogue]:
    dialogues = []
    for line, record in enumerate(read_jsonl(path), 1):
        try:
            dialogue = parse_dialogue(record, line)
        except (ValueError, KeyError, IndexError) as exc:
            raise SystemExit(f"{path} line {line}: cannot parse the dialogue: {exc}") from None
        foreign = [r for r in dialogue.relevant if r not in memories or memories[r].user != dialogue.user]
        if foreign:
            owners = ", ".join(f"{r}: {'user ' + str(memories[r].user) if r in memories else 'no such memory'}"
                               for r in foreign)
            warn(
                f"{lang} dialogue {line} (user {dialogue.user}): relevant ids not of that user ({owners}); "
                f"they stay in the gold set and can never be recalled"
            )
        dialogues.append(dialogue)
    return dialogues


# --------------------------------------------------------------------------
# kvchat, through its command line only
# --------------------------------------------------------------------------

_KEY_PART = re.compile(r"[^\w]+")


def _key_part(text: str) -> str:
    return _KEY_PART.sub("_", text.strip().lower()).strip("_") or "none"


def memory_key(memory: Memory) -> str:
    """The fact key of a memory: memory.<scene>.<emotion>.m<id>.

    Scene and emotion are lower-cased, with runs of anything but letters, digits
    and underscores turned into "_"; Chinese words are kept as they are. The id
    keeps keys unique (many memories share scene and emotion). Examples:
    memory.activity.happy.m1, memory.活动类.开心.m1. Change the scheme here only:
    nothing else depends on its shape (the ranked list is read from "ref").
    """
    return f"memory.{_key_part(memory.scene)}.{_key_part(memory.emotion)}.m{memory.id}"


def fact_line(memory: Memory) -> dict:
    return {
        "key": memory_key(memory), "value": memory.event, "ref": str(memory.id),
        "created_at": f"{memory.time}T00:00:00+00:00",
    }


def turn_lines(dialogue: Dialogue) -> list[dict]:
    return [
        {"session": dialogue.session, "role": u.role, "name": u.name, "content": u.content,
         "ref": f"{dialogue.session}-{u.index}"}
        for u in dialogue.history
    ]


def query_line(dialogue: Dialogue) -> dict:
    return {"id": dialogue.line, "query": dialogue.query.content, "session": dialogue.session}


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


class KvchatError(Exception):
    pass


class PostgresDatabases:
    """New databases on a PostgreSQL server, one per store, dropped at the end."""

    def __init__(self, url: str):
        import psycopg
        from sqlalchemy.engine import make_url

        self.url = make_url(url).set(drivername="postgresql+psycopg")
        self.connection = psycopg.connect(
            self.url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True)
        self.names: list[str] = []

    def create(self, stem: str) -> str:
        name = f"{stem}_{os.getpid()}"
        self.connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self.connection.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for name in self.names:
            self.connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Kvchat:
    """The kvchat command with its own KVCHAT_HOME."""

    def __init__(self, command: list[str], home: Path, database: str | None = None):
        self.command = command
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("KVCHAT_DB", "KVCHAT_SESSION", "KVCHAT_MODEL", "KVCHAT_EXTRACT")}
        self.env["KVCHAT_HOME"] = str(home)
        if database is not None:  # else the SQLite file in the home
            self.env["KVCHAT_DB"] = database
        self.env["PYTHONIOENCODING"] = "utf-8"

    def run(self, *args: str) -> tuple[str, float]:
        """stdout and wall seconds; KvchatError with the command's stderr on failure."""
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [*self.command, *args], env=self.env, capture_output=True, text=True, encoding="utf-8",
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise KvchatError(f"cannot run {shlex.join(self.command)}: {exc}") from None
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise KvchatError(
                f"`kvchat {' '.join(args)}` exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc.stdout, elapsed

    def stream(self, *args: str) -> tuple[list[str], list[float], float]:
        """stdout lines, the time each line arrived and the wall time, all in
        seconds from the start of the process (kvchat flushes every JSON line)."""
        with tempfile.TemporaryFile() as errors:
            start = time.perf_counter()
            try:
                proc = subprocess.Popen(
                    [*self.command, *args], env=self.env, stdout=subprocess.PIPE, stderr=errors,
                    stdin=subprocess.DEVNULL,
                )
            except OSError as exc:
                raise KvchatError(f"cannot run {shlex.join(self.command)}: {exc}") from None
            lines, stamps = [], []
            for raw in proc.stdout:
                stamps.append(time.perf_counter() - start)
                lines.append(raw.decode("utf-8"))
            proc.wait()
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                errors.seek(0)
                raise KvchatError(f"`kvchat {' '.join(args)}` exited with {proc.returncode}: "
                                  f"{errors.read().decode('utf-8', 'replace').strip()}")
        return lines, stamps, elapsed


@dataclass
class UserDb:
    lang: str
    user: int
    tmp: Path
    kvchat: Kvchat
    memories: list[Memory]
    dialogues: list[Dialogue]
    notes: list[str] = field(default_factory=list)
    queries_file: Path | None = None
    empty_file: Path | None = None


def prepare(db: UserDb) -> UserDb:
    """Import the memories and the sessions, and check what kvchat stored."""
    facts_file = db.tmp / "facts.jsonl"
    turns_file = db.tmp / "turns.jsonl"
    db.queries_file = db.tmp / "queries.jsonl"
    db.empty_file = db.tmp / "empty.jsonl"
    write_jsonl(facts_file, [fact_line(m) for m in db.memories])
    write_jsonl(turns_file, [line for d in db.dialogues for line in turn_lines(d)])
    write_jsonl(db.queries_file, [query_line(d) for d in db.dialogues])
    db.empty_file.write_text("", encoding="utf-8")

    db.kvchat.run("facts", "import", str(facts_file))
    db.kvchat.run("import", str(turns_file))

    stored = json.loads(db.kvchat.run("facts", "--json")[0])
    by_ref = {str(f.get("ref")): f for f in stored}
    missing = [m.id for m in db.memories if str(m.id) not in by_ref]
    if missing or len(stored) != len(db.memories):
        raise KvchatError(
            f"{db.lang} user {db.user}: imported {len(db.memories)} memories, kvchat lists {len(stored)} facts "
            f"(missing refs: {missing[:10]})"
        )
    renamed = [(memory_key(m), by_ref[str(m.id)]["key"]) for m in db.memories
               if by_ref[str(m.id)]["key"] != memory_key(m)]
    if renamed:
        db.notes.append(f"kvchat stored {len(renamed)} keys differently, e.g. {renamed[0][0]!r} -> {renamed[0][1]!r}")
    changed = [m.id for m in db.memories if by_ref[str(m.id)]["value"] != m.event]
    if changed:
        db.notes.append(f"kvchat stored {len(changed)} values differently (memory ids {changed[:5]})")
    return db


def _as_id(ref):
    try:
        return int(ref)
    except (TypeError, ValueError):
        return ref


def run_recall(db: UserDb, repeat: int) -> dict:
    """Every query of the user through one recall process; ranked fact refs per dialogue.

    Timed: the wall time of the process, the same command on an empty queries
    file (process start and opening the database), and the arrival time of each
    output line, whose gaps are the per-query times once the process is
    running (the first line also carries whatever the first query sets up).
    With `repeat` > 1 the run with the shortest wall time counts.
    """
    args = ["recall", "--json", "--limit", str(LIMIT), "--recall-tokens", str(RECALL_TOKENS), "--queries"]
    empties, runs = [], []
    for _ in range(repeat):
        out, seconds = db.kvchat.run(*args, str(db.empty_file))
        if out.strip():
            db.notes.append(f"recall on an empty queries file printed {out.strip()[:80]!r}")
        empties.append(seconds)
        runs.append(db.kvchat.stream(*args, str(db.queries_file)))
    lines, stamps, wall = min(runs, key=lambda run: run[2])
    stdout = "".join(lines)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    results = {}
    for number, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise KvchatError(f"recall output line {number} is not JSON: {line[:120]!r}") from None
        results[record.get("id")] = record
    expected = [d.line for d in db.dialogues]
    answered = sum(1 for line in lines if line.strip())
    if answered != len(expected) or sorted(results, key=str) != sorted(expected, key=str):
        raise KvchatError(
            f"{db.lang} user {db.user}: recall printed {answered} lines for ids {sorted(results, key=str)[:10]}..., "
            f"expected one line for each of {len(expected)} ids {expected[:10]}..."
        )
    ranked, other_items, duplicates = {}, 0, 0
    for dialogue in db.dialogues:
        items = results[dialogue.line]["items"]
        refs = [_as_id(item.get("ref")) for item in items if item.get("kind") == "fact"]
        other_items += sum(item.get("kind") != "fact" for item in items)
        duplicates += len(refs) - len(set(refs))
        ranked[dialogue.line] = refs
    if other_items:
        db.notes.append(f"{other_items} non-fact items (older turns) in the recall output; they take slots of --limit")
    if duplicates:
        db.notes.append(f"{duplicates} repeated fact refs in ranked lists")
    return {"ranked": ranked, "non_fact_items": other_items, "wall": wall, "empty": min(empties),
            "first_line": stamps[0] if stamps else wall, "gaps": gaps,
            "walls": [run[2] for run in runs], "empties": empties}


# --------------------------------------------------------------------------
# Baseline: plain FTS5 bm25 with sqlite3
# --------------------------------------------------------------------------

_CJK = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
    "\u3040-\u309f\u30a0-\u30ff\uac00-\ud7af"
)
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(r"[^\W_]+")  # roughly unicode61's tokens: runs of letters and digits


def bigrams(text: str) -> str:
    """Each run of CJK characters as space-separated overlapping bigrams (a lone
    character stays itself); other text unchanged."""
    def split(match: re.Match) -> str:
        run = match.group()
        grams = [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]
        return " " + " ".join(grams) + " "
    return _CJK_RUN.sub(split, text)


def identity(text: str) -> str:
    return text


def or_query(text: str) -> str | None:
    """An OR of the quoted tokens of text, each once, in order; nothing else dropped."""
    tokens = dict.fromkeys(t.lower() for t in _WORD.findall(text))
    if not tokens:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in tokens)


def baseline(memories: list[Memory], dialogues: list[Dialogue], tokenizer: str, segment, query_of) -> dict:
    """bm25 rankings of each dialogue's user's memories, with time per query."""
    con = sqlite3.connect(":memory:")
    for user in USERS:
        con.execute(f"CREATE VIRTUAL TABLE m{user} USING fts5(text, tokenize='{tokenizer}')")
        con.executemany(
            f"INSERT INTO m{user}(rowid, text) VALUES (?, ?)",
            [(m.id, segment(f"{m.scene} {m.emotion} {m.event}")) for m in memories if m.user == user],
        )
    ranked, seconds = {}, 0.0
    for dialogue in dialogues:
        start = time.perf_counter()
        expression = or_query(segment(query_of(dialogue)))
        rows = [] if expression is None else con.execute(
            f"SELECT rowid FROM m{dialogue.user} WHERE m{dialogue.user} MATCH ? ORDER BY rank, rowid LIMIT ?",
            (expression, LIMIT),
        ).fetchall()
        seconds += time.perf_counter() - start
        ranked[dialogue.line] = [row[0] for row in rows]
    con.close()
    return {"ranked": ranked, "seconds": seconds}


# --------------------------------------------------------------------------
# Metrics and report
# --------------------------------------------------------------------------


def score(ranked: dict[int, list], dialogues: list[Dialogue]) -> dict:
    scores = {}
    for k in KS:
        hits, recalls = [], []
        for dialogue in dialogues:
            relevant = set(dialogue.relevant)
            top = set(ranked.get(dialogue.line, [])[:k])
            found = len(top & relevant)
            hits.append(found > 0)
            recalls.append(found / len(relevant))
        scores[f"hit@{k}"] = sum(hits) / len(hits)
        scores[f"R@{k}"] = sum(recalls) / len(recalls)
    return scores


def table(rows: list[dict]) -> str:
    metrics = [f"hit@{k}" for k in KS] + [f"R@{k}" for k in KS]
    head = ["system", "lang", "query", *metrics, "ms/query", "ms/query steady", "ms/query incl. start"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for row in rows:
        cells = [row["system"], row["lang"], row["query"]] + [f"{row[m]:.3f}" for m in metrics]
        cells.append(f"{row['ms_per_query']:.2f}")
        for name in ("ms_per_query_steady", "ms_per_query_incl_start"):
            cells.append("–" if row.get(name) is None else f"{row[name]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def show(dialogues: list[Dialogue], lang: str, count: int) -> None:
    for dialogue in dialogues[:count] + [d for d in dialogues[count:] if d.notes][:count]:
        note(f"--- {lang} dialogue {dialogue.line} (user {USERS[dialogue.user]}, test turn {dialogue.test_turn}, "
             f"relevant {dialogue.relevant})")
        for line in turn_lines(dialogue):
            note(f"  {line['ref']:>8} {line['role']:<9} {line['name']:<9} {line['content'][:90]}")
        note(f"  QUERY: {json.dumps(query_line(dialogue), ensure_ascii=False)}")
        for text in dialogue.notes:
            note(f"  note: {text}")


def git_state() -> str | None:
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty src" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def default_kvchat() -> str:
    beside = Path(sys.executable).parent / "kvchat"
    if beside.exists():
        return str(beside)
    return shutil.which("kvchat") or str(beside)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kvchat memory recall on MADial-Bench (hit@k, Recall@k, ms/query).")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"data folder (default {DEFAULT_DATA})")
    parser.add_argument("--lang", choices=("en", "zh", "both"), default="both")
    parser.add_argument("--keep", action="store_true", help="keep the temporary databases and say where")
    parser.add_argument("--kvchat", default=default_kvchat(), help="the kvchat command (default: next to python)")
    parser.add_argument("--show", type=int, default=0, metavar="N",
                        help="print the first N parsed dialogues (and N with parsing notes) per language")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each timed recall N times and keep the fastest")
    parser.add_argument("--output", type=Path, help=f"JSON results (default {RESULTS_PATH}, or "
                        "recall_madial_postgresql.json beside it with --postgres)")
    parser.add_argument("--postgres", metavar="URL",
                        help="store on this PostgreSQL server instead of SQLite files, in a new database per "
                        "language and user, dropped afterwards (e.g. postgresql://127.0.0.1:5432/test)")
    args = parser.parse_args(argv)

    args.output = args.output or (
        RESULTS_PATH.with_name("recall_madial_postgresql.json") if args.postgres else RESULTS_PATH)
    system = "kvchat recall (PostgreSQL)" if args.postgres else "kvchat recall"
    server = PostgresDatabases(args.postgres) if args.postgres else None
    started = time.perf_counter()
    command = shlex.split(args.kvchat)
    langs = ["en", "zh"] if args.lang == "both" else [args.lang]

    data, dbs, tmp_dirs = {}, [], []
    for lang in langs:
        memories = load_memories(args.data / lang / "memories.jsonl")
        dialogues = load_dialogues(args.data / lang / "dialogues.jsonl", memories, lang)
        data[lang] = (memories, dialogues)
        if args.show:
            show(dialogues, lang, args.show)
        for user in USERS:
            tmp = Path(tempfile.mkdtemp(prefix=f"madial-{lang}-{USERS[user].lower()}-"))
            tmp_dirs.append(tmp)
            dbs.append(UserDb(
                lang=lang, user=user, tmp=tmp,
                kvchat=Kvchat(command, tmp / "home", server.create(f"madial_{lang}_{user}") if server else None),
                memories=[m for m in memories.values() if m.user == user],
                dialogues=[d for d in dialogues if d.user == user],
            ))

    try:
        # Imports in parallel (2 cores); the timed recall runs one at a time.
        note(f"importing {len(dbs)} databases with {shlex.join(command)} ...")
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(prepare, dbs))
        recalls = {}
        for db in dbs:
            note(f"recall {db.lang} {USERS[db.user]}: {len(db.dialogues)} queries")
            recalls[(db.lang, db.user)] = run_recall(db, max(1, args.repeat))
    except KvchatError as exc:
        note(f"error: {exc}")
        return 1
    finally:
        if args.keep:
            for db in dbs:
                note(f"kept {db.lang} {USERS[db.user]}: KVCHAT_HOME={db.tmp / 'home'}  (input files in {db.tmp})")
        else:
            for tmp in tmp_dirs:
                shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            server.drop_all()

    rows, languages = [], {}
    for lang in langs:
        memories, dialogues = data[lang]
        lang_dbs = [db for db in dbs if db.lang == lang]
        ranked, wall, empty, gaps = {}, 0.0, 0.0, []
        for db in lang_dbs:
            result = recalls[(lang, db.user)]
            ranked.update(result["ranked"])
            wall += result["wall"]
            empty += result["empty"]
            gaps += result["gaps"]
        n = len(dialogues)
        gaps.sort()
        row = {"system": system, "lang": lang, "query": "last user utterance", "n": n,
               **score(ranked, dialogues),
               "ms_per_query": 1000 * (wall - empty) / n,
               "ms_per_query_steady": 1000 * sum(gaps) / len(gaps) if gaps else None,
               "ms_per_query_incl_start": 1000 * wall / n,
               "ms_per_query_steady_median": 1000 * gaps[len(gaps) // 2] if gaps else None,
               "ms_per_query_steady_p95": 1000 * gaps[min(len(gaps) - 1, int(0.95 * len(gaps)))] if gaps else None,
               "timing_seconds": {USERS[db.user]: {"queries": len(db.dialogues),
                                                   **{k: recalls[(lang, db.user)][k]
                                                      for k in ("wall", "empty", "first_line", "walls", "empties")}}
                                  for db in lang_dbs},
               "non_fact_items": sum(recalls[(lang, db.user)]["non_fact_items"] for db in lang_dbs),
               "ranked": {str(k): v for k, v in ranked.items()}}
        rows.append(row)
        languages[lang] = {
            "dialogues": n,
            "dialogues_by_user": {USERS[u]: sum(d.user == u for d in dialogues) for u in USERS},
            "memories_by_user": {USERS[u]: sum(m.user == u for m in memories.values()) for u in USERS},
            "recall_at_1_ceiling": sum(1 / len(d.relevant) for d in dialogues) / n,
            "kvchat_notes": {USERS[db.user]: db.notes for db in lang_dbs},
            "parsing_notes": {str(d.line): d.notes for d in dialogues if d.notes},
            "queries": [{"id": d.line, "user": d.user, "query": d.query.content, "relevant": d.relevant}
                        for d in dialogues],
        }

    variants = {"en": [("porter unicode61", "FTS5 bm25 porter", identity)],
                "zh": [("unicode61", "FTS5 bm25 unicode61", identity),
                       ("unicode61", "FTS5 bm25 bigrams", bigrams)]}
    queries = [("last user utterance", lambda d: d.query.content),
               ("whole dialogue", lambda d: d.authors_query)]
    for lang in langs:
        memories, dialogues = data[lang]
        for tokenizer, name, segment in variants[lang]:
            for query_name, query_of in queries:
                result = baseline(list(memories.values()), dialogues, tokenizer, segment, query_of)
                rows.append({"system": name, "lang": lang, "query": query_name, "n": len(dialogues),
                             **score(result["ranked"], dialogues),
                             "ms_per_query": 1000 * result["seconds"] / len(dialogues),
                             "ms_per_query_steady": None, "ms_per_query_incl_start": None,
                             "ranked": {str(k): v for k, v in result["ranked"].items()}})

    elapsed = time.perf_counter() - started
    print(table(rows))
    print()
    counts = ", ".join(f"{lang}: {languages[lang]['dialogues']} dialogues" for lang in langs)
    steady = "; ".join(f"{row['lang']} median {row['ms_per_query_steady_median']:.1f} ms, "
                       f"p95 {row['ms_per_query_steady_p95']:.1f} ms" for row in rows
                       if row["system"] == system and row["ms_per_query_steady_median"] is not None)
    ceilings = ", ".join(f"{lang} {languages[lang]['recall_at_1_ceiling']:.3f}" for lang in langs)
    print(f"{counts}. hit@k: share of dialogues with a relevant memory in the top k; R@k: mean share of a "
          f"dialogue's relevant memories in the top k (R@1 ceiling {ceilings}).\n"
          f"kvchat timing, one recall process per user: ms/query = (all queries - empty queries file) / n; "
          f"steady = mean gap between consecutive result lines, i.e. without process start and first-query "
          f"set-up ({steady}); incl. start = all queries / n. Baselines are timed in-process (query building + MATCH).")
    for lang in langs:
        for user, texts in languages[lang]["kvchat_notes"].items():
            for text in texts:
                warn(f"{lang} {user}: {text}")

    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(elapsed, 2),
        "kvchat": shlex.join(command),
        "git": git_state(),
        "data": str(args.data.resolve()),
        "settings": {"limit": LIMIT, "recall_tokens": RECALL_TOKENS, "ks": list(KS),
                     "key_scheme": memory_key.__doc__.split("\n")[0]},
        "languages": languages,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    note(f"results: {args.output}  ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

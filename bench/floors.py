"""What SQLite and tiktoken cost by themselves, under two of issue 6's targets.

Issue 6 asks for an import of at least 20,000 turns a second, and for
`kvchat ask` to add at most 100 ms to `import openai`. This measures the
work under each that is not kvchat's Python:

- **Import.** N turns of bench/scale.py's mixed English and Chinese chat go
  into a fresh store, a transaction per session of 1,000 turns, through the
  INSERT statement kvchat's import runs. Everything Python does for a turn
  (analyzing its text for the index, counting its tokens) is done before the
  clock starts: the index trigger's analyzer is a dictionary look-up of the
  terms made beforehand. What is left is SQLite writing the rows and FTS5
  indexing the terms. It runs three ways: as kvchat's schema has it, with
  FTS5's automatic merging off, and without the full-text index (its
  trigger dropped). Then the same turns through kvchat's own import
  (kvchat.transfer.import_turns) into another fresh store, for comparison.
- **The tokenizer.** In a fresh process, tiktoken's `Encoding` built for
  o200k_base from ranks already in memory (no file read or parsed), five
  times: the part of loading the tokenizer that no cache of kvchat's can
  remove. The prompt is cut to a token budget, so `ask` counts with it
  before it sends the request.

Prints a Markdown table and writes bench/results/floors.json.

    .venv/bin/python bench/floors.py                 # 100,000 turns
    .venv/bin/python bench/floors.py --turns 20000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import scale  # noqa: E402  (the texts, the session names, the model)

PER_SESSION = 1_000

TOKENIZER_FLOOR = """
import statistics, time, tiktoken
from kvchat import tokens
encoding = tokens.get_encoding("o200k_base")
ranks = {}
for rank in range(encoding.n_vocab):
    try:
        ranks[encoding.decode_single_token_bytes(rank)] = rank
    except KeyError:
        pass
ranks = {piece: rank for piece, rank in ranks.items() if rank not in encoding._special_tokens.values()}
times = []
for _ in range(5):
    started = time.perf_counter()
    tiktoken.Encoding(name="o200k_floor", pat_str=encoding._pat_str, mergeable_ranks=ranks,
                      special_tokens=encoding._special_tokens)
    times.append(time.perf_counter() - started)
print(statistics.median(times) * 1000)
"""


def chat_turns(count: int) -> list[dict]:
    texts = scale.Texts(random.Random(7))
    turns = []
    for i in range(count):
        session = i // PER_SESSION
        lang = scale.session_lang(session)
        content = texts.question(lang) if i % 2 == 0 else texts.answer(lang)
        turns.append({"session": scale.session_name(session), "role": "user" if i % 2 == 0 else "assistant",
                      "content": content})
    return turns


@contextlib.contextmanager
def fresh_home() -> Iterator[Path]:
    """A temporary KVCHAT_HOME, and nothing that would point kvchat elsewhere
    (KVCHAT_DB, KVCHAT_CONFIG): a benchmark never writes into a user's store."""
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="kvfloor") as home:
        for name in ("KVCHAT_DB", "KVCHAT_CONFIG"):
            os.environ.pop(name, None)
        os.environ["KVCHAT_HOME"] = home
        try:
            yield Path(home)
        finally:
            os.environ.clear()
            os.environ.update(saved)


def sqlite_alone(turns: list[dict], way: str) -> float:
    """Turns a second that SQLite and FTS5 write with no Python work per turn."""
    from kvchat import textsearch, tokens
    from kvchat.store import _INSERT_TURN, Store  # the statement kvchat's import runs

    terms = {turn["content"]: textsearch.index_text(turn["content"]) for turn in turns}
    encoding = tokens.encoding_name_for_model(scale.MODEL)
    rows = [dict(role=turn["role"], name=None, content=turn["content"],
                 tokens=tokens.count_tokens(turn["content"], scale.MODEL), token_encoding=encoding, model=None,
                 status="complete", error=None, prompt_tokens=None, completion_tokens=None, ref=None,
                 created_at="2026-11-26 12:00:00.000000") for turn in turns]
    with fresh_home() as home:
        with Store() as store:
            ids = [store.open_session(scale.session_name(s)).id for s in range(len(turns) // PER_SESSION)]
        db = sqlite3.connect(home / "kvchat.db", isolation_level=None)
        db.create_function("kvchat_index_text", 1, terms.__getitem__, deterministic=True)
        if way == "no automerge":
            db.execute("INSERT INTO turns_fts(turns_fts, rank) VALUES('automerge', 0)")
        elif way == "no index":
            db.execute("DROP TRIGGER turns_fts_insert")
        started = time.perf_counter()
        for place, session_id in enumerate(ids):
            batch = rows[place * PER_SESSION : (place + 1) * PER_SESSION]
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_INSERT_TURN, [dict(row, session_id=session_id) for row in batch])
            db.execute("UPDATE sessions SET turn_count = turn_count + ? WHERE id = ?", (len(batch), session_id))
            db.execute("COMMIT")
        seconds = time.perf_counter() - started
        db.close()
    return len(rows) / seconds


def kvchat_import(turns: list[dict]) -> float:
    """Turns a second through kvchat's own import, as bench/scale.py builds."""
    from kvchat import transfer
    from kvchat.store import Store

    lines = [json.dumps(turn, ensure_ascii=False) for turn in turns]
    seconds = 0.0
    with fresh_home(), Store() as store:
        for start in range(0, len(lines), 10 * PER_SESSION):
            started = time.perf_counter()
            transfer.import_turns(store, lines[start : start + 10 * PER_SESSION], model=scale.MODEL)
            seconds += time.perf_counter() - started
    return len(lines) / seconds


def tokenizer_ms() -> float:
    with fresh_home():
        done = subprocess.run([sys.executable, "-c", TOKENIZER_FLOOR], capture_output=True, text=True,
                              check=True, env=dict(os.environ))
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100_000, help="turns to write (a multiple of 1,000)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "floors.json")
    args = parser.parse_args()
    turns = chat_turns(args.turns - args.turns % PER_SESSION or PER_SESSION)
    results = {"turns": len(turns)}
    for way in ("kvchat's schema", "no automerge", "no index"):
        results[f"sqlite alone, {way}: turns/s"] = round(sqlite_alone(turns, way))
    results["kvchat import: turns/s"] = round(kvchat_import(turns))
    results["tiktoken Encoding() for o200k_base from ranks in memory: ms"] = round(
        statistics.median(tokenizer_ms() for _ in range(3)), 1
    )
    print(f"| {len(turns):,} turns, on this machine | |\n|---|---:|")
    for name, value in results.items():
        if name != "turns":
            print(f"| {name} | {value:,} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

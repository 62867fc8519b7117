"""How long recall takes when the store is large: 100,000 facts (issue 3 asks
for under 5 ms a query).

Builds a fresh store with N facts through kvchat's own import path, from the
MADial memory texts (English and Chinese) recombined into new sentences, then
times `build_prompt` (which runs recall) in process for a set of questions
taken from the MADial dialogues: p50 and p99 in ms.

    .venv/bin/python bench/recall_scale.py            # 100,000 facts
    .venv/bin/python bench/recall_scale.py --facts 10000
    .venv/bin/python bench/recall_scale.py --home /tmp/kv100k   # keep the store, reuse it next time
    .venv/bin/python bench/recall_scale.py --db postgresql+psycopg://127.0.0.1/kv100k   # on PostgreSQL
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "madial"


def _texts(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


NAMES = 50_000  # distinct names (projects, people, hosts) a large store mentions


def name(rng: random.Random) -> str:
    """A made-up proper name, drawn so that a few are frequent and most rare:
    the chance of the name of rank r goes as 1/r (Zipf), as names in real
    notes do."""
    rank = int(math.exp(rng.random() * math.log(NAMES)))
    syllables = ["ka", "lo", "mi", "ren", "sto", "vu", "tak", "zel", "qui", "bar"]
    word = ""
    while True:
        word += syllables[rank % len(syllables)]
        rank //= len(syllables)
        if not rank:
            return word


def synthetic_facts(count: int, rng: random.Random):
    """(key, value, ref, created_at) items: each value splices two real memory
    texts of one language, so common-word statistics stay like the real
    thing, and names one or two made-up things, as real memories name
    projects, people and places the common words never cover."""
    pools = {lang: [m["event"] for m in _texts(f"{lang}/memories.jsonl")] for lang in ("en", "zh")}
    scenes = {lang: sorted({m["scene"] for m in _texts(f"{lang}/memories.jsonl")}) for lang in ("en", "zh")}
    for i in range(count):
        lang = "en" if i % 2 else "zh"
        first, second = rng.sample(pools[lang], 2)
        cut_a, cut_b = len(first) // 2, len(second) // 2
        named = " ".join(name(rng) for _ in range(rng.randint(1, 2)))
        value = f"{first[:cut_a]} ({named}) {second[cut_b:]}"
        key = f"memory.{rng.choice(scenes[lang]).lower()}.m{i}"
        yield key, value, str(i), None


def questions(rng: random.Random, count: int) -> list[str]:
    """Utterances of the MADial dialogues; every other one also names a
    made-up thing, as a question about a particular project or person does."""
    found = []
    for lang in ("en", "zh"):
        for record in _texts(f"{lang}/dialogues.jsonl"):
            for item in record["dialogue"][1:-1]:
                text = item.split(":", 1)[-1].strip().strip('"“”\n ')
                if len(text) > 8:
                    found.append(text)
    rng.shuffle(found)
    return [f"{text} {name(rng)}" if i % 2 else text for i, text in enumerate(found[:count])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--home", help="KVCHAT_HOME to build the store in and keep (reused when it "
                        "already holds the same number of facts; the import time is then not measured)")
    parser.add_argument("--db", help="a KVCHAT_DB URL to build the store in instead (an empty "
                        "PostgreSQL database, say; reused like --home)")
    args = parser.parse_args()
    rng = random.Random(7)
    with contextlib.ExitStack() as stack:
        home = args.home or stack.enter_context(tempfile.TemporaryDirectory())
        os.environ["KVCHAT_HOME"] = home
        if args.db:
            os.environ["KVCHAT_DB"] = args.db
        from kvchat import tokens
        from kvchat.prompt import PromptOptions, build_prompt
        from kvchat.store import Store

        store = Store()
        started = time.perf_counter()
        facts = list(synthetic_facts(args.facts, rng))  # the same draws of rng either way
        if len(store.facts()) != args.facts:
            store.import_facts(facts)
            import_seconds = round(time.perf_counter() - started, 2)
        else:
            import_seconds = None
        if store.engine.dialect.name == "postgresql":
            # What autovacuum does within a minute of a bulk import: without
            # statistics the planner takes every fact for another user's.
            with store.engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        options = PromptOptions(model="gpt-4o-mini")
        asked = questions(rng, args.queries)
        tokens.count_tokens("warm up", options.model)
        timings = []
        found = 0
        for question in asked:
            started = time.perf_counter()
            prompt = build_prompt(store, question=question, question_tokens=tokens.count_tokens(question, options.model),
                                  session_id=None, before_id=None, options=options)
            timings.append((time.perf_counter() - started) * 1000)
            found += bool(prompt.memories)
        timings.sort()
        if args.db and not args.db.startswith("sqlite"):
            from sqlalchemy import text

            with store.engine.connect() as connection:
                size = connection.execute(text("SELECT pg_database_size(current_database())")).scalar()
        else:
            size = Path(home, "kvchat.db").stat().st_size
        result = {
            "engine": store.engine.dialect.name,
            "facts": args.facts,
            "import_seconds": import_seconds,
            "database_mb": round(size / 1e6, 1),
            "queries": len(asked),
            "queries_with_memories": found,
            "p50_ms": round(statistics.median(timings), 2),
            "p99_ms": round(timings[min(len(timings) - 1, int(len(timings) * 0.99))], 2),
        }
        store.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

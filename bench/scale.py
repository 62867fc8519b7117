"""kvchat at 10,000, 100,000 and 1,000,000 stored turns (issue 6, "Fast at a million turns").

For each size it builds a store of that many turns across 1,000 sessions, plus
100,000 facts, through kvchat's own write paths: the turns as JSON lines
through `kvchat import`'s code (kvchat.transfer.import_turns: parsing,
redaction, tiktoken counts, Store.add_turns), the facts through
Store.import_facts. The text is realistic mixed English and Chinese chat:
questions and answers recombined from the MADial dialogues and memories
(../shared/data/madial), from a few words to a few hundred tokens, about a
third of the answers with a code block. Then it measures:

- building the prompt for a question in process (kvchat.prompt.build_prompt:
  token counts, recent window, fact and older-turn recall, with `--memory
  summary` the summary too), on the store as one `kvchat import` of the whole
  history leaves it (its common terms counted, see as_after_one_import): p50
  and p99, with the process's memos warm (the first questions included), and
  with them emptied before each question as in a fresh `kvchat ask` (which
  starts with the term counts earlier asks kept, see Store._kept_term_counts);
- storing one exchange as kvchat.conversation does (count the question, add
  it pending, count the answer, record it): p50 and p99;
- the import rates (turns and facts per second) and the database's size
  against the raw UTF-8 text it holds;
- whole `kvchat` processes (median wall time of --runs runs each, the
  commands interleaved) next to `python -c pass`, `import typer`, `import
  openai`, and Simon Willison's `llm` where bench/.venv-llm has it (its log
  database written by llm itself, see llm_log_db); `kvchat ask` runs against
  tests/fake_openai.py, started here, and its peak RSS is read from os.wait4.

Prints one Markdown table and writes it as JSON to bench/results/scale.json.

    .venv/bin/python bench/scale.py                              # 10k, 100k, 1M turns
    .venv/bin/python bench/scale.py --sizes 10000,100000 --home /tmp/kvscale --runs 10
    .venv/bin/python bench/scale.py --build-only --sizes 1000000 --home /tmp/kvscale
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

import recall_scale  # noqa: E402  (the MADial texts, made-up names, synthetic facts)

SESSIONS = 1_000
FACTS = 100_000
MODEL = "gpt-4o-mini"
PYTHON = Path(sys.executable)
KVCHAT = PYTHON.parent / "kvchat"
LLM = BENCH / ".venv-llm" / "bin" / "llm"

# -- realistic text ---------------------------------------------------------


def _utterances() -> dict[str, dict[str, list[str]]]:
    """User and assistant utterances of the MADial dialogues, and the memory
    events, per language."""
    pools: dict[str, dict[str, list[str]]] = {}
    for lang in ("en", "zh"):
        user, assistant = [], []
        for record in recall_scale._texts(f"{lang}/dialogues.jsonl"):
            for item in record["dialogue"]:
                speaker, _, text = item.partition(":")
                text = text.strip().strip('"“”\n ')
                if len(text) < 2:
                    continue
                (assistant if "Assistant" in speaker or "助手" in speaker else user).append(text)
        events = [m["event"] for m in recall_scale._texts(f"{lang}/memories.jsonl")]
        pools[lang] = {"user": user, "assistant": assistant, "events": events}
    return pools


CODE_VERBS = ["parse", "load", "merge", "render", "index", "retry", "cache", "split", "encode", "sync"]
CODE_LANGS = ["python", "rust", "sql", "bash", "typescript"]
ASKS = {
    "en": ["How do I {verb} the {name} data in {lang}?", "Can you fix this {lang} bug in {name}?",
           "Write a {lang} function that can {verb} {name} records.", "Why is {name} slow when I {verb} it?"],
    "zh": ["怎么用{lang}来{verb} {name} 的数据？", "帮我看看 {name} 里这个{lang}的错误。",
           "写一个{lang}函数，{verb} {name} 的记录。", "为什么 {name} 在 {verb} 的时候很慢？"],
}


class Texts:
    """Questions and answers of a developer's chat, in English or Chinese."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.pools = _utterances()

    def _join(self, lang: str, parts: list[str]) -> str:
        return ("" if lang == "zh" else " ").join(parts)

    def question(self, lang: str) -> str:
        rng = self.rng
        pool = self.pools[lang]
        kind = rng.random()
        if kind < 0.35:  # a coding request naming a project
            return rng.choice(ASKS[lang]).format(
                verb=rng.choice(CODE_VERBS), name=recall_scale.name(rng), lang=rng.choice(CODE_LANGS))
        if kind < 0.45:  # a few words
            words = rng.choice(pool["user"])
            return words[: rng.randint(6, 24)]
        parts = [rng.choice(pool["user"]) for _ in range(rng.choice((1, 1, 2, 3, 5)))]
        if rng.random() < 0.3:
            parts.append(rng.choice(pool["events"]))
        return self._join(lang, parts)

    def answer(self, lang: str) -> str:
        rng = self.rng
        pool = self.pools[lang]
        parts = [rng.choice(pool["assistant"]) for _ in range(rng.choice((1, 2, 3, 4, 6, 8)))]
        text = self._join(lang, parts)
        if rng.random() < 0.35:
            text += "\n\n" + self.code(rng.randint(4, 40))
        return text

    def code(self, lines: int) -> str:
        rng = self.rng
        name = recall_scale.name(rng)
        verb = rng.choice(CODE_VERBS)
        body = [f"def {verb}_{name}(items, *, limit={rng.randint(1, 999)}):", "    out = []"]
        for i in range(lines):
            other = rng.choice(CODE_VERBS)
            body.append(f"    value_{i} = {other}_{name}(items[{i}], key=\"{recall_scale.name(rng)}\")  # step {i}")
            if i % 5 == 4:
                body.append(f"    if value_{i} is None:\n        raise ValueError('{name}: no {other} at {i}')")
        body.append("    return out")
        return "```python\n" + "\n".join(body) + "\n```"


def session_name(i: int) -> str:
    return f"s{i:04d}"


def session_lang(i: int) -> str:
    return "zh" if i % 2 else "en"


# -- building ----------------------------------------------------------------


def build(home: Path, turns: int, texts: Texts) -> dict:
    """A store of `turns` turns across SESSIONS sessions and FACTS facts in
    `home`, or the one already there; what the build took."""
    marker = home / "build.json"
    if marker.exists():
        built = json.loads(marker.read_text())
        if built["turns"] == turns and built["facts"] == FACTS:
            built["reused"] = True
            return built
        raise SystemExit(f"{home} holds another store ({built['turns']} turns); use another --home")
    home.mkdir(parents=True, exist_ok=True)
    if (home / "kvchat.db").exists():
        raise SystemExit(f"{home} holds an unfinished build; remove it or use another --home")
    os.environ["KVCHAT_HOME"] = str(home)
    from kvchat import transfer
    from kvchat.store import Store

    per_session = turns // SESSIONS
    raw_turn_bytes = raw_fact_bytes = 0
    import_seconds = 0.0
    with Store() as store:
        started = time.perf_counter()
        facts = list(recall_scale.synthetic_facts(FACTS, texts.rng))
        raw_fact_bytes = sum(len(k.encode()) + len(v.encode()) for k, v, *_ in facts)
        t0 = time.perf_counter()
        store.import_facts(facts)
        facts_seconds = time.perf_counter() - t0
        del facts
        # Ten sessions per import, as a `kvchat import` of a 10-session file
        # would do it (the store writes one transaction per session).
        done = 0
        for first in range(0, SESSIONS, 10):
            lines = []
            for s in range(first, min(first + 10, SESSIONS)):
                lang = session_lang(s)
                for t in range(per_session):
                    # Now and then a turn in the other language, as bilingual users write.
                    turn_lang = lang if texts.rng.random() < 0.9 else ("en" if lang == "zh" else "zh")
                    content = texts.question(turn_lang) if t % 2 == 0 else texts.answer(turn_lang)
                    raw_turn_bytes += len(content.encode())
                    lines.append(json.dumps({"session": session_name(s), "role": "user" if t % 2 == 0 else "assistant",
                                             "content": content}, ensure_ascii=False))
            t0 = time.perf_counter()
            transfer.import_turns(store, lines, model=MODEL)
            import_seconds += time.perf_counter() - t0
            done += len(lines)
            if first % 100 == 0:
                print(f"  {turns:,}: {done:,} turns imported, {done / import_seconds:,.0f} turns/s",
                      file=sys.stderr, flush=True)
        with store.engine.connect() as db:
            db.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        build_seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in home.glob("kvchat.db*"))
    built = {
        "turns": turns, "sessions": SESSIONS, "facts": FACTS,
        "turn_import_seconds": round(import_seconds, 2),
        "turns_per_second": round(turns / import_seconds),
        "fact_import_seconds": round(facts_seconds, 2),
        "facts_per_second": round(FACTS / facts_seconds),
        "build_seconds": round(build_seconds, 1),
        "database_bytes": size,
        "raw_turn_bytes": raw_turn_bytes, "raw_fact_bytes": raw_fact_bytes,
        "database_bytes_per_turn": round(size / turns),
        "raw_bytes_per_turn": round(raw_turn_bytes / turns),
        "size_ratio": round(size / (raw_turn_bytes + raw_fact_bytes), 2),
    }
    marker.write_text(json.dumps(built, indent=2))
    built["reused"] = False
    return built


# -- in-process measurements ---------------------------------------------------


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 2),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2), "n": len(ordered)}


def forget_memos(store) -> None:
    """Empty what a Store remembers between questions (bm25 totals, term
    counts), as a fresh `kvchat ask` process starts without them."""
    store._totals.clear()
    store.__dict__.pop("_known_terms", None)


def keep_term_counts(store) -> None:
    """Write the term counts the last prompt made, as `kvchat ask` does with
    its answer, for the next process (Store._keep_term_counts)."""
    with store._write_sql():
        pass


def as_after_one_import(store) -> float:
    """Put the store's kept term counts as one `kvchat import` of the whole
    history leaves them (Store.recount_common_terms), whatever earlier runs
    kept: the build imports ten sessions at a time, and an import that grows
    the store by less than 5% recounts nothing. Returns the seconds the
    recount took."""
    with store._write_sql() as sql:
        sql("DELETE FROM search_term_counts WHERE term <> ''", {})
    started = time.perf_counter()
    for kind in ("turns", "facts"):
        store.recount_common_terms(kind, added=store._select(store.ROWS_SQL[kind], {})[0][0])
    return round(time.perf_counter() - started, 2)


def ensure_summaries(store, session_ids: list[int], texts: Texts) -> None:
    """A rolling summary for each session, covering all but its last 12 turns."""
    from kvchat import tokens

    for sid in session_ids:
        current = store.summary(sid)
        if current is not None:
            continue
        older = store.history(sid, limit=13)
        if len(older) < 13:
            continue
        content = " ".join(texts.rng.choice(texts.pools["en"]["events"]) for _ in range(12))
        store.save_summary(sid, content, tokens=tokens.count_tokens(content, MODEL), last_turn_id=older[0].id,
                           turn_count=0, model=MODEL, covers_after=None)


def measure_in_process(home: Path, texts: Texts, queries: int, exchanges: int) -> dict:
    os.environ["KVCHAT_HOME"] = str(home)
    from kvchat import tokens
    from kvchat.prompt import PromptOptions, build_prompt
    from kvchat.store import NewTurn, Store

    rng = random.Random(11)
    asked = recall_scale.questions(rng, queries)
    results: dict = {}
    with Store() as store:
        ids = {s.name: s.id for s in store.sessions()}
        chosen = [ids[session_name(rng.randrange(SESSIONS))] for _ in asked]
        ensure_summaries(store, sorted(set(chosen)), texts)
        tokens.count_tokens("warm up", MODEL)
        results["recount seconds"] = as_after_one_import(store)
        for label, memory, cold in (("token", "token", False), ("token, fresh memos", "token", True),
                                    ("summary", "summary", False)):
            options = PromptOptions(model=MODEL, memory=memory)
            timings = []
            found = 0
            for question, sid in zip(asked, chosen):
                if cold:
                    forget_memos(store)
                started = time.perf_counter()
                prompt = build_prompt(store, question=question, question_tokens=tokens.count_tokens(question, MODEL),
                                      session_id=sid, before_id=None, options=options)
                timings.append((time.perf_counter() - started) * 1000)
                if cold:
                    keep_term_counts(store)
                found += bool(prompt.memories)
            results[f"prompt ({label})"] = {**percentiles(timings), "with_memories": found}
        timings = []
        encoding = tokens.encoding_name_for_model(MODEL)
        for i in range(exchanges):
            sid = chosen[i % len(chosen)]
            lang = "en" if i % 2 else "zh"
            question, answer = texts.question(lang), texts.answer(lang)
            started = time.perf_counter()
            q = store.add_turn(sid, NewTurn(role="user", content=question, tokens=tokens.count_tokens(question, MODEL),
                                            token_encoding=encoding, status="pending", model=MODEL))
            store.record_answer(q, NewTurn(role="assistant", content=answer, tokens=tokens.count_tokens(answer, MODEL),
                                           token_encoding=encoding, status="complete", model=MODEL))
            timings.append((time.perf_counter() - started) * 1000)
        results["store exchange"] = percentiles(timings)
    return results


# -- whole processes ---------------------------------------------------------------


# Runs a command and reports its wall time and peak RSS. The command is
# started from this small process, not from the benchmark's: Linux carries
# the memory of the process that forked into the child's peak RSS
# (ru_maxrss keeps the high-water mark of the memory replaced at exec), and
# the benchmark holds gigabytes by then (one `kvchat ask` showed 2,987 MB).
MEASURE = r"""
import os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = child.stderr.read()
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - started
sys.stderr.buffer.write(err)
sys.stderr.write(f"\n{seconds} {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}\n")
"""


def run_once(argv: list[str], env: dict) -> tuple[float, int, int]:
    """Wall seconds, exit status and peak RSS (KiB) of one process."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *argv], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err, _, report = done.stderr.decode(errors="replace").rstrip("\n").rpartition("\n")
    seconds, code, peak = report.split()
    if int(code) != 0:
        print(f"  {' '.join(argv[:4])}: exit {code}: {err[-300:]}", file=sys.stderr)
    return float(seconds), int(code), int(peak)


def llm_log_db(home: Path, responses: int, texts: Texts, server) -> Path | None:
    """A log database for `llm` of `responses` responses, or None when llm
    is not installed. llm writes it itself: one llm conversation per kvchat
    session, each exchange a real prompt through llm's OpenAI plugin to the
    local test server, logged with `Response.log_to_db` as `llm prompt` logs
    it (into the threads, turns and messages tables of llm 0.3x, not its
    legacy `responses` table). It is kept beside the stores, for every size
    that asks for as many responses (see --llm-responses)."""
    if not LLM.exists():
        return None
    llm_home = home.parent / f"llm-{responses}"
    logs = llm_home / "logs.db"
    if logs.exists():
        return llm_home
    llm_home.mkdir(parents=True, exist_ok=True)
    # llm reaches the test server as an extra OpenAI-compatible model.
    (llm_home / "extra-openai-models.yaml").write_text(
        f"- model_id: kvbench\n  model_name: {MODEL}\n  api_base: {server.base_url}\n")
    script = r"""
import json, sys, llm, sqlite_utils
from llm.migrations import migrate
db = sqlite_utils.Database(sys.argv[1])
migrate(db)
model = llm.get_model("kvbench")
current = None
for line in sys.stdin:
    session, question = json.loads(line)
    if session != current:
        current, conversation = session, model.conversation()
    response = conversation.prompt(question)
    response.text()
    response.log_to_db(db)
"""
    partial = llm_home / "logs.db.partial"
    partial.unlink(missing_ok=True)
    py = LLM.parent / "python"
    env = dict(os.environ, LLM_USER_PATH=str(llm_home))
    child = subprocess.Popen([str(py), "-c", script, str(partial)], stdin=subprocess.PIPE, text=True, env=env)
    server.chunk_chars = 4096  # whole answers in one streamed chunk: the build's pace is llm's own
    # Session after session, as build() writes the kvchat store.
    per_session = responses // SESSIONS
    for s in range(SESSIONS):
        for _ in range(per_session):
            lang = session_lang(s)
            server.queue_answer(texts.answer(lang))
            child.stdin.write(json.dumps([session_name(s), texts.question(lang)], ensure_ascii=False) + "\n")
    child.stdin.close()
    if child.wait() != 0:
        raise SystemExit(f"building llm's log database failed (exit {child.returncode})")
    server.reset()
    partial.rename(logs)
    return llm_home


def measure_processes(home: Path, runs: int, server, texts: Texts, llm_responses: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KVCHAT_"))}
    env.update(KVCHAT_HOME=str(home), OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="bench",
               NO_COLOR="1", COLUMNS="120")
    commands = {
        "python -c pass": [str(PYTHON), "-c", "pass"],
        "python -c 'import typer'": [str(PYTHON), "-c", "import typer"],
        "python -c 'import openai'": [str(PYTHON), "-c", "import openai"],
        "kvchat --help": [str(KVCHAT), "--help"],
        "kvchat history -n 20": [str(KVCHAT), "history", "-s", session_name(0), "-n", "20"],
        "kvchat facts": [str(KVCHAT), "facts"],
        "kvchat ask": None,  # built per run: a fresh question in session s0003
    }
    llm_home = llm_log_db(home, llm_responses, texts, server)
    if llm_home is not None:
        llm_env = dict(env, LLM_USER_PATH=str(llm_home))
        commands["llm --version"] = [str(LLM), "--version"]
        commands["llm logs -n 20"] = [str(LLM), "logs", "-n", "20"]
    timings: dict[str, list[float]] = {name: [] for name in commands}
    rss: list[int] = []
    failures: dict[str, int] = {}
    for _ in range(runs):
        for name, argv in commands.items():
            this_env = llm_env if name.startswith("llm") else env
            if name == "kvchat ask":
                question = texts.question("en" if len(rss) % 2 else "zh")
                server.queue_answer(texts.answer("en"))
                argv = [str(KVCHAT), "ask", "-s", session_name(3), question]
            seconds, code, peak = run_once(argv, this_env)
            timings[name].append(seconds * 1000)
            if code:
                failures[name] = failures.get(name, 0) + 1
            if name == "kvchat ask":
                rss.append(peak)
    result = {name: {"median_ms": round(statistics.median(t), 1), "min_ms": round(min(t), 1), "runs": len(t)}
              for name, t in timings.items()}
    result["kvchat ask peak RSS"] = {"max_mb": round(max(rss) / 1024, 1), "median_mb": round(statistics.median(rss) / 1024, 1)}
    if llm_home is None:
        result["llm"] = "not installed"
    else:
        result["llm log responses"] = llm_responses
    if failures:
        result["failures"] = failures
    return result


# -- report ---------------------------------------------------------------------------

TARGETS = {
    "prompt (token)": "1M: p50 < 5 ms, p99 < 25 ms, ≤ 2× the 10k figure",
    "store exchange": "p50 < 3 ms",
    "import": "≥ 20,000 turns/s",
    "size": "≤ 3× raw text",
    "rss": "< 120 MB at 1M",
    "kvchat --help": "≤ 2× `import typer`",
    "kvchat history -n 20": "≤ ½ `llm logs -n 20`",
    "kvchat ask": "≤ `import openai` + 100 ms",
}


def table(results: dict) -> str:
    sizes = list(results)
    head = "| measure | " + " | ".join(f"{int(s):,} turns" for s in sizes) + " | target |"
    lines = [head, "|---|" + "---:|" * len(sizes) + "---|"]

    def row(label: str, cell, target: str = "") -> None:
        cells = []
        for s in sizes:
            try:
                cells.append(cell(results[s]))
            except (KeyError, TypeError):
                cells.append("–")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    for label in ("token", "token, fresh memos", "summary"):
        key = f"prompt ({label})"
        row(f"build prompt, {label}: p50 / p99 ms", lambda r, k=key: f"{r['in_process'][k]['p50']} / {r['in_process'][k]['p99']}",
            TARGETS["prompt (token)"] if label == "token" else "")
    row("keep the counts of common terms, as an import does: s", lambda r: f"{r['in_process']['recount seconds']}")
    row("store one exchange: p50 / p99 ms",
        lambda r: f"{r['in_process']['store exchange']['p50']} / {r['in_process']['store exchange']['p99']}",
        TARGETS["store exchange"])
    row("import turns/s (kvchat import path)", lambda r: f"{r['build']['turns_per_second']:,}", TARGETS["import"])
    row("import facts/s (Store.import_facts, 100k)", lambda r: f"{r['build']['facts_per_second']:,}")
    row("database bytes / turn (raw text bytes / turn)",
        lambda r: f"{r['build']['database_bytes_per_turn']:,} ({r['build']['raw_bytes_per_turn']:,})")
    row("database / raw text (turns + facts)", lambda r: f"{r['build']['size_ratio']}×", TARGETS["size"])
    row("database size MB", lambda r: f"{r['build']['database_bytes'] / 1e6:,.0f}")
    row("`kvchat ask` peak RSS MB (max of runs)", lambda r: f"{r['processes']['kvchat ask peak RSS']['max_mb']}", TARGETS["rss"])
    for name in ("python -c pass", "python -c 'import typer'", "python -c 'import openai'", "kvchat --help",
                 "kvchat history -n 20", "kvchat facts", "kvchat ask", "llm --version", "llm logs -n 20"):
        def cell(r, name=name):
            p = r["processes"]
            if name.startswith("llm") and name not in p:
                return "llm: not installed"
            return f"{p[name]['median_ms']}"
        row(f"`{name}` median ms", cell, TARGETS.get(name, ""))
    row("llm's log database, responses", lambda r: f"{r['processes']['llm log responses']:,}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="turn counts, comma-separated")
    parser.add_argument("--home", type=Path, help="keep the stores here (one folder per size) and reuse them")
    parser.add_argument("--runs", type=int, default=10, help="runs of each whole-process command (median)")
    parser.add_argument("--queries", type=int, default=200, help="questions timed for each prompt row")
    parser.add_argument("--exchanges", type=int, default=200, help="exchanges stored for the timing")
    parser.add_argument("--build-only", action="store_true", help="build (or check) the stores and stop")
    parser.add_argument("--llm-responses", type=int,
                        help="at most this many responses in llm's log database (llm logs one in about 70 ms: "
                             "the 500,000 exchanges of 1M turns would take ten hours)")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "scale.json")
    args = parser.parse_args()
    # The stores are this script's own, in --home: never a user's, which these would name.
    for name in ("KVCHAT_DB", "KVCHAT_CONFIG"):
        os.environ.pop(name, None)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    # llm's log holds the same number of responses in every session (llm_log_db).
    if args.llm_responses is not None and (args.llm_responses <= 0 or args.llm_responses % SESSIONS):
        parser.error(f"--llm-responses must be a positive multiple of {SESSIONS:,} (one per session)")

    from fake_openai import FakeOpenAIServer

    # pip byte-compiles a wheel's modules as it installs them; an editable
    # install's only `make install` compiles. Start-up timed while kvchat
    # compiles its own source (PYTHONDONTWRITEBYTECODE) would time that.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src"), str(ROOT / "migrations")],
                   check=True)
    results: dict = {}
    with contextlib.ExitStack() as stack:
        base = args.home or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kvscale-")))
        server = stack.enter_context(FakeOpenAIServer())
        for size in sizes:
            home = base / f"turns-{size}"
            texts = Texts(random.Random(size))
            print(f"building {size:,} turns in {home} ...", file=sys.stderr, flush=True)
            built = build(home, size, texts)
            print(f"  {json.dumps(built)}", file=sys.stderr, flush=True)
            results[size] = {"build": built}
            if args.build_only:
                continue
            print(f"measuring {size:,} ...", file=sys.stderr, flush=True)
            results[size]["in_process"] = measure_in_process(home, texts, args.queries, args.exchanges)
            exchanges = size // 2
            llm_responses = min(exchanges, args.llm_responses) if args.llm_responses else exchanges
            llm_responses -= llm_responses % SESSIONS  # as many in every session, as llm_log_db writes them
            results[size]["processes"] = measure_processes(home, args.runs, server, texts, llm_responses)
            if args.home is None:
                shutil.rmtree(home, ignore_errors=True)
    if args.build_only:
        print(json.dumps(results, indent=2))
        return 0
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"sizes": sizes, "sessions": SESSIONS, "facts": FACTS, "model": MODEL,
                                       "runs": args.runs, "llm_installed": LLM.exists(), "results": results},
                                      indent=2, ensure_ascii=False))
    print(f"\nresults: {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

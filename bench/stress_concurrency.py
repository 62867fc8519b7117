"""Several kvchat processes writing one database at once (issue 5).

Starts our local OpenAI-compatible test server (tests/fake_openai.py) in this
process, then runs, all at the same time against one fresh database:

* N `kvchat chat` processes (default 8), each asking M questions (default 200)
  read from its stdin, half of them in one shared session and half in a
  session of their own;
* W `kvchat facts set` writers (default 4), each setting the same few keys
  again and again, every write with a value of its own.

Then it reads the database and checks that every question and every answer is
stored exactly once, each worker's questions in the order it asked them, each
answer after its own question (right after it in a session of its own), that
no process failed or printed an error ("database is locked" above all), and
that each fact ends with one of the values written to it and keeps every
write in its history. Prints a Markdown table; writes JSON to
bench/results/stress_concurrency.json.

    .venv/bin/python bench/stress_concurrency.py                      # 8 x 200
    .venv/bin/python bench/stress_concurrency.py --processes 4 --questions 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

FACT_KEYS = ("team.lead", "project.deadline", "user.editor")
SHARED_SESSION = "shared"


@dataclass
class Result:
    processes: int
    questions: int
    fact_writers: int
    fact_writes: int
    wall_seconds: float = 0.0
    questions_per_second: float = 0.0
    errors: list[str] = field(default_factory=list)
    locked: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    misordered: list[str] = field(default_factory=list)
    fact_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.errors or self.lost or self.duplicated or self.misordered or self.fact_problems)


def question(worker: int, number: int) -> str:
    return f"worker {worker} question {number}: how do I test the parser?"


def session_of(worker: int) -> str:
    return SHARED_SESSION if worker % 2 else f"own-{worker}"


def fact_value(writer: int, number: int) -> str:
    return f"value {number} from writer {writer}"


def _kvchat(args: list[str], env: dict, stdin: bytes = b"") -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "kvchat", *args], input=stdin,
                          capture_output=True, env=env)
    return done.returncode, done.stderr.decode()


def _chat_worker(worker: int, questions: int, env: dict) -> list[str]:
    lines = "".join(question(worker, i) + "\n" for i in range(questions)) + "exit\n"
    code, stderr = _kvchat(["chat", "-s", session_of(worker), "--extract", "rules"], env, lines.encode())
    # chat prints its banner and where the conversation is saved on stderr;
    # anything else there is a failure.
    problems = [line for line in stderr.splitlines()
                if line.strip() and not line.startswith(("kvchat chat:", "Conversation saved:"))]
    if code:
        problems.append(f"chat worker {worker} exited with {code}")
    return problems


def _fact_writer(writer: int, writes: int, env: dict) -> list[str]:
    problems = []
    for number in range(writes):
        key = FACT_KEYS[number % len(FACT_KEYS)]
        code, stderr = _kvchat(["facts", "set", key, fact_value(writer, number)], env)
        # It reports "KEY: updated" on stderr; a failure exits non-zero.
        if code or "error" in stderr:
            problems.append(f"facts set {key} (writer {writer}) exited with {code}: {stderr.strip()}")
    return problems


def run_stress(processes: int, questions: int, fact_writers: int, fact_writes: int, *,
               base_url: str, home: Path, database: str | None = None) -> Result:
    """Run the workers against `database` (a URL; default: the SQLite file
    in `home`), which must hold no kvchat data yet, and check what it holds."""
    database = database or str(home / "kvchat.db")
    env = dict(os.environ, KVCHAT_HOME=str(home), OPENAI_BASE_URL=base_url, KVCHAT_DB=database,
               OPENAI_API_KEY="sk-stress-0123456789", KVCHAT_MODEL="gpt-4o-mini")
    result = Result(processes, questions, fact_writers, fact_writes)
    # One question first, alone: it creates the database and verifies the
    # tokenizer files once, so the workers measure writing, not set-up.
    code, stderr = _kvchat(["ask", "warm up", "-s", "warm-up", "--extract", "rules"], env)
    if code:
        raise SystemExit(f"the warm-up question failed: {stderr.strip()}")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=processes + fact_writers) as pool:
        jobs = [pool.submit(_chat_worker, w, questions, env) for w in range(processes)]
        jobs += [pool.submit(_fact_writer, w, fact_writes, env) for w in range(fact_writers)]
        for job in jobs:
            result.errors += job.result()
    result.wall_seconds = time.perf_counter() - started
    result.questions_per_second = processes * questions / result.wall_seconds
    result.locked = sum("locked" in error for error in result.errors)
    _check_turns(result, database)
    _check_facts(result, database)
    return result


def _check_turns(result: Result, database: str) -> None:
    from kvchat.store import Store

    with Store(database) as store:
        sessions = {s.name: s for s in store.sessions()}
        asked_in = {name: [] for name in {session_of(w) for w in range(result.processes)}}
        for worker in range(result.processes):
            asked_in[session_of(worker)] += [question(worker, i) for i in range(result.questions)]
        for name, expected in asked_in.items():
            turns = store.history(sessions[name].id) if name in sessions else []
            if name in sessions and sessions[name].turn_count != len(turns):
                result.misordered.append(f"{name}: turn_count {sessions[name].turn_count}, {len(turns)} turns")
            asked = Counter(t.content for t in turns if t.role == "user")
            answered = Counter(t.content for t in turns if t.role == "assistant")
            for text in expected:
                for kind, seen in (("question", asked[text]), ("answer", answered["echo: " + text])):
                    if seen == 0:
                        result.lost.append(f"{name}: {kind} to {text!r}")
                    elif seen > 1:
                        result.duplicated.append(f"{name}: {kind} to {text!r} x{seen}")
            unexpected = (set(asked) - set(expected)) | {a for a in answered if a[len("echo: "):] not in expected}
            result.duplicated += [f"{name}: unexpected turn {text!r}" for text in sorted(unexpected)]
            position = {t.content: i for i, t in enumerate(turns)}
            for text in expected:
                if text in position and "echo: " + text in position:
                    gap = position["echo: " + text] - position[text]
                    # In a session of its own the answer follows at once; in
                    # the shared one other workers' turns may come between.
                    if gap < 1 or (name != SHARED_SESSION and gap != 1):
                        result.misordered.append(f"{name}: answer to {text!r} {gap} turns after it")
            for worker in range(result.processes):
                if session_of(worker) != name:
                    continue
                mine = [t.content for t in turns if t.role == "user" and t.content.startswith(f"worker {worker} ")]
                if mine != sorted(mine, key=lambda text: int(text.split()[3].rstrip(":"))):
                    result.misordered.append(f"{name}: worker {worker}'s questions out of order")


def _check_facts(result: Result, database: str) -> None:
    from kvchat.store import Store

    written: dict[str, list[str]] = {key: [] for key in FACT_KEYS}
    for writer in range(result.fact_writers):
        for number in range(result.fact_writes):
            written[FACT_KEYS[number % len(FACT_KEYS)]].append(fact_value(writer, number))
    with Store(database) as store:
        for key, values in written.items():
            if not values:
                continue
            fact = store.fact(key)
            if fact is None or fact.value not in values:
                result.fact_problems.append(f"{key}: ends as {fact and fact.value!r}, never written")
            history = [v.value for v in store.fact_history(key) if v.action == "set"]
            if sorted(history) != sorted(values):
                result.fact_problems.append(f"{key}: history has {len(history)} of {len(values)} writes")
            elif fact is not None and history[-1] != fact.value:
                result.fact_problems.append(f"{key}: value {fact.value!r} is not the last write in its history")


def table(result: Result) -> str:
    lost, duplicated = len(result.lost), len(result.duplicated)
    return "\n".join([
        "| processes | questions | fact writes | wall time | questions/s | errors | 'locked' | lost | duplicated | misordered | fact problems |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result.processes} | {result.processes * result.questions} | "
        f"{result.fact_writers * result.fact_writes} | {result.wall_seconds:.1f} s | "
        f"{result.questions_per_second:.1f} | {len(result.errors)} | {result.locked} | {lost} | "
        f"{duplicated} | {len(result.misordered)} | {len(result.fact_problems)} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8, help="kvchat chat processes (default 8)")
    parser.add_argument("--questions", type=int, default=200, help="questions each asks (default 200)")
    parser.add_argument("--fact-writers", type=int, default=4, help="kvchat facts set writers (default 4)")
    parser.add_argument("--fact-writes", type=int, default=15, help="facts set runs by each writer (default 15)")
    parser.add_argument("--db", help="an empty database to run on, as a KVCHAT_DB URL "
                        "(default: a new SQLite file); e.g. postgresql+psycopg://127.0.0.1/stress")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default: "
                        "bench/results/stress_concurrency[_postgresql].json)")
    args = parser.parse_args()
    engine = "postgresql" if args.db and args.db.startswith("postgresql") else "sqlite"
    output = args.output or ROOT / "bench" / "results" / (
        "stress_concurrency.json" if engine == "sqlite" else "stress_concurrency_postgresql.json")

    from fake_openai import FakeOpenAIServer

    with FakeOpenAIServer() as server, tempfile.TemporaryDirectory(prefix="kvchat-stress-") as home:
        result = run_stress(args.processes, args.questions, args.fact_writers, args.fact_writes,
                            base_url=server.base_url, home=Path(home), database=args.db)
    print(table(result))
    for kind in ("errors", "lost", "duplicated", "misordered", "fact_problems"):
        for line in getattr(result, kind)[:10]:
            print(f"{kind}: {line}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(
        {**asdict(result), "ok": result.ok, "cpus": os.cpu_count(), "engine": engine}, indent=2) + "\n")
    print(f"written to {output}")
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()

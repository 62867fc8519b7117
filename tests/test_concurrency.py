"""Several kvchat processes on one database at once: every question and
answer is stored exactly once, in order within its session, and facts written
at once end as one of the written values with every write in their history."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from kvchat.cli import app
worker, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    session = "shared" if i % 2 else f"own-{worker}"
    try:
        app(["ask", f"worker {worker} question {i}", "-s", session, "--extract", "rules"], standalone_mode=False)
    except SystemExit as done:
        if done.code:
            raise
"""


def test_processes_writing_at_once_lose_nothing(model, store):
    workers, asks = 4, 6
    children = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, str(w), str(asks)], env=dict(os.environ),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for w in range(workers)
    ]
    errors = [child.communicate(timeout=300)[1].decode() for child in children]
    assert [child.returncode for child in children] == [0] * workers, errors
    assert not any("locked" in e for e in errors)
    questions = []
    for session in store.sessions():
        turns = store.history(session.id)
        asked = [t for t in turns if t.role == "user"]
        answered = {t.content: t for t in turns if t.role == "assistant"}
        assert len(answered) == len(asked) == len(turns) // 2
        for question in asked:
            # In a shared session two processes' exchanges may interleave, but
            # every answer comes after its own question.
            answer = answered["echo: " + question.content]
            assert answer.id > question.id
            assert (question.status, answer.status) == ("complete", "complete")
        if session.name.startswith("own-"):
            assert [t.role for t in turns] == ["user", "assistant"] * len(asked)
        questions += [t.content for t in asked]
        assert session.turn_count == len(turns)
    assert sorted(questions) == sorted(f"worker {w} question {i}" for w in range(workers) for i in range(asks))


def test_chats_and_fact_writers_at_once_store_everything_once(model, home):
    """The stress script in bench/ at a small size: 4 `kvchat chat` processes
    of 10 questions (two sharing a session) while 3 processes set the same
    facts."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from stress_concurrency import FACT_KEYS, run_stress

    result = run_stress(4, 10, 3, 6, base_url=model.base_url, home=home, database=os.environ.get("KVCHAT_DB"))
    assert (result.errors, result.lost, result.duplicated, result.misordered, result.fact_problems) == (
        [], [], [], [], []
    )
    # The same, read independently of the script's checks.
    from kvchat.store import Store

    with Store() as store:
        turns = [t for s in store.sessions() for t in store.history(s.id)]
        assert len([t for t in turns if t.role == "user"]) == 4 * 10 + 1  # and the warm-up
        for key in FACT_KEYS:
            history = [v for v in store.fact_history(key) if v.action == "set"]
            assert len(history) == 3 * 2
            assert store.fact(key).value == history[-1].value

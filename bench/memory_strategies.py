"""What each memory strategy costs over a long conversation (issue 4).

Plays one scripted dialog of a developer and kvchat (hundreds of turns: code
questions, follow-ups, now and then a fact about themselves or the project)
through each strategy, with kvchat's own library, against our local
OpenAI-compatible test server (tests/fake_openai.py), which answers at once
with scripted answers of realistic length. Every request the server receives
is counted by kind (answers, summaries, fact extraction, embeddings) and
measured with tiktoken. Prints one Markdown table and writes it as JSON.

    .venv/bin/python bench/memory_strategies.py                 # 300 questions
    .venv/bin/python bench/memory_strategies.py --questions 100 --output /tmp/m.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

TOPICS = [
    ("parser", "a recursive descent parser for arithmetic expressions"),
    ("cache", "an LRU cache with a time-to-live for each entry"),
    ("cli", "a command-line tool that renames photos by their EXIF date"),
    ("sql", "a query that finds the top three customers per region"),
    ("async", "an asyncio crawler that respects robots.txt"),
    ("tests", "pytest fixtures for a temporary PostgreSQL database"),
    ("regex", "a regular expression for ISO 8601 timestamps"),
    ("docker", "a small Dockerfile for a Flask app with gunicorn"),
    ("git", "a pre-commit hook that runs ruff on staged files"),
    ("rust", "a Rust function that parses a config file with serde"),
]
FOLLOW_UPS = [
    "Can you add type hints to that?",
    "How would I test this?",
    "What happens with empty input?",
    "Make it faster for large inputs.",
    "Explain the second part again, more slowly.",
    "Could you rewrite it without the external dependency?",
]
FACTS = [
    "My name is Priya and I use neovim.",
    "I prefer tabs over spaces.",
    "Our project is called Tern and it runs on Python 3.12.",
    "I work on macOS with zsh.",
    "My team deploys to Kubernetes on GCP.",
    "I use poetry for dependency management.",
]
CALLBACKS = [
    "Remember the {topic} from earlier? Combine it with what we have now.",
    "Go back to the {topic} code: does it still work with the last change?",
]


def script(questions: int, rng: random.Random) -> list[tuple[str, str]]:
    """(question, answer) pairs: a topic is opened, followed up a few times,
    facts are stated now and then, and old topics come back later."""
    pairs: list[tuple[str, str]] = []
    opened: list[str] = []
    while len(pairs) < questions:
        name, what = TOPICS[len(opened) % len(TOPICS)]
        opened.append(name)
        pairs.append((f"Write {what}.", answer(rng, name, code_lines=rng.randint(10, 40))))
        for _ in range(rng.randint(2, 5)):
            pairs.append((rng.choice(FOLLOW_UPS), answer(rng, name, code_lines=rng.randint(0, 25))))
        if rng.random() < 0.5:
            pairs.append((rng.choice(FACTS), "Noted, I will keep that in mind."))
        if len(opened) > 3 and rng.random() < 0.5:
            old = rng.choice(opened[:-1])
            pairs.append((rng.choice(CALLBACKS).format(topic=old), answer(rng, old, code_lines=15)))
    return pairs[:questions]


def answer(rng: random.Random, topic: str, *, code_lines: int) -> str:
    prose = " ".join(
        f"The {topic} step {i} keeps the state in one place so the caller sees consistent results."
        for i in range(rng.randint(2, 6))
    )
    if not code_lines:
        return prose
    body = "\n".join(f"    value_{i} = compute_{topic}(value_{i - 1}, option={i})" for i in range(1, code_lines))
    return f"{prose}\n\n```python\ndef {topic}_step(value_0):\n{body}\n    return value_{code_lines - 1}\n```\n"


STRATEGIES = {
    "token (default, 4000)": dict(memory="token", memory_tokens=4000),
    "window (10 turns)": dict(memory="window", window=10),
    "summary (1000 recent + 400)": dict(memory="summary", memory_tokens=1000, summary_tokens=400),
    "token, no facts": dict(memory="token", memory_tokens=4000, facts=False),
    "token + vector": dict(memory="token", memory_tokens=4000, vector=True),
}


def is_summary_request(body: dict) -> bool:
    return body["messages"][0]["content"].startswith("You keep a running summary")


def summarising_server():
    """The test server, answering summary requests itself (with a summary as
    long as the model was allowed), so scripted answers go to the questions."""
    from fake_openai import FakeOpenAIServer, _Answer

    class Server(FakeOpenAIServer):
        def _next_item(self, body: dict, json_mode: bool):
            if not json_mode and is_summary_request(body):
                limit = body.get("max_tokens") or body.get("max_completion_tokens") or 400
                return _Answer(" ".join(f"Point {i} of the conversation so far." for i in range(limit // 8)))
            return super()._next_item(body, json_mode)

    return Server()


def kind_of(request) -> str:
    if request.path.endswith("/embeddings"):
        return "embeddings"
    body = request.body
    if "response_format" in body:
        return "extraction"
    if is_summary_request(body):
        return "summary"
    return "answer"


def request_tokens(request, model: str) -> int:
    from kvchat import tokens

    if request.path.endswith("/embeddings"):
        inputs = request.body["input"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        return sum(tokens.count_tokens(text, model) for text in inputs)
    return tokens.messages_tokens(request.body["messages"], model)


def play(strategy: dict, pairs: list[tuple[str, str]], server, model: str, extract: str) -> dict:
    from kvchat.conversation import AskOptions, Conversation
    from kvchat.model_client import ModelClient
    from kvchat.prompt import PromptOptions
    from kvchat.store import Store

    settings = dict(strategy)
    vector = settings.pop("vector", False)
    server.reset()
    prompt_tokens: list[int] = []
    seconds: list[float] = []
    with tempfile.TemporaryDirectory() as home:
        os.environ["KVCHAT_HOME"] = home
        with Store() as store, ModelClient(api_key="bench", base_url=server.base_url) as client:
            conversation = Conversation(store, client)
            options = AskOptions(
                prompt=PromptOptions(model=model, **settings), extract=extract, vector=vector,
                embedding_model="text-embedding-3-small",
            )
            for question, reply in pairs:
                server.queue_answer(reply)
                start = time.perf_counter()
                result = conversation.ask("bench", question, options)
                seconds.append(time.perf_counter() - start)
                assert result.answer.content == reply, "the script and the answers went out of step"
                prompt_tokens.append(result.prompt.tokens)
    calls: dict[str, list[int]] = {}
    for request in server.requests:
        if request.method == "POST":
            calls.setdefault(kind_of(request), []).append(request_tokens(request, model))
    return {
        "questions": len(pairs),
        "prompt_tokens_mean": statistics.fmean(prompt_tokens),
        "prompt_tokens_p50": statistics.median(prompt_tokens),
        "prompt_tokens_max": max(prompt_tokens),
        "prompt_tokens_last": prompt_tokens[-1],
        "calls": {kind: {"count": len(sizes), "tokens_sent": sum(sizes), "mean_tokens": statistics.fmean(sizes)}
                  for kind, sizes in sorted(calls.items())},
        "tokens_sent_total": sum(sum(sizes) for sizes in calls.values()),
        "ms_per_question_p50": statistics.median(seconds) * 1000,
    }


def table(results: dict[str, dict]) -> str:
    lines = [
        "| strategy | prompt tokens / question (mean, p50, max, last) | answer calls | summary calls (mean tokens) "
        "| extraction calls (mean tokens) | embedding calls (tokens) | all tokens sent | ms / question (p50, in process) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        calls = r["calls"]

        def part(kind: str, what: str = "mean_tokens") -> str:
            if kind not in calls:
                return "0"
            c = calls[kind]
            return f"{c['count']} ({c[what]:.0f})"

        lines.append(
            f"| {name} | {r['prompt_tokens_mean']:.0f}, {r['prompt_tokens_p50']:.0f}, {r['prompt_tokens_max']}, "
            f"{r['prompt_tokens_last']} | {calls.get('answer', {}).get('count', 0)} | {part('summary')} "
            f"| {part('extraction')} | {part('embeddings', 'tokens_sent')} | {r['tokens_sent_total']:,} "
            f"| {r['ms_per_question_p50']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--extract", default="model", choices=["model", "rules", "off"])
    parser.add_argument("--strategy", action="append", choices=sorted(STRATEGIES), help="only these (repeatable)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "memory_strategies.json")
    args = parser.parse_args()

    pairs = script(args.questions, random.Random(args.seed))
    results = {}
    with summarising_server() as server:
        for name in args.strategy or list(STRATEGIES):
            print(f"playing {len(pairs)} questions ({2 * len(pairs)} turns) with {name} ...", file=sys.stderr)
            results[name] = play(STRATEGIES[name], pairs, server, args.model, args.extract)
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(
        {"questions": args.questions, "model": args.model, "extract": args.extract, "seed": args.seed,
         "results": results}, indent=2))
    print(f"\nresults: {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()

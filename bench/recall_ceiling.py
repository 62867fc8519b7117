#!/usr/bin/env python3
"""How far keyword retrieval can reach on MADial-Bench at all: an oracle.

`bench/recall_madial.py` measures what kvchat's recall finds. This script
asks a different question: with the words the dialogue and the memories
share, as kvchat's analyzer reads them, could *any* keyword ranking put a
relevant memory in the top k? It answers with an oracle that knows the gold
labels, so it is an upper bound, not a system:

- A relevant memory is *reachable at k* when some one, two or three terms it
  shares with the dialogue (every utterance before the test turn) are held,
  all of them, by at most k of the user's memories: a ranking that weighed
  just those terms would put it in the top k.
- hit@k bound: share of dialogues with a reachable relevant memory.
  R@k bound: mean of min(reachable, k) / relevant. Both are generous: each
  memory gets its own best terms, which no single ranking of the dialogue
  could give them all.
- Also counted: dialogues in which no relevant memory shares any term that
  at most a tenth of the user's memories hold (only common words in common:
  "felt", "happy", the child's name).

A memory is read as kvchat indexes it: its key's words (scene and emotion)
and its event.

    .venv/bin/python bench/recall_ceiling.py
"""

from __future__ import annotations

import contextlib
import io
import itertools

import recall_madial as madial
from kvchat import textsearch

KS = (1, 3, 5, 10)
MAX_TERMS = 3  # the largest set of shared terms the oracle may pick
DISTINCTIVE = 0.1  # "distinctive": held by at most this share of the user's memories


def memory_terms(memory: madial.Memory) -> set[str]:
    key = textsearch.index_key(madial.memory_key(memory))
    return set(key.split()) | set(textsearch.terms(memory.event))


def fewest_holding(shared: list[str], pool: list[set[str]]) -> int:
    """The fewest memories of `pool` that hold every term of some set of up
    to MAX_TERMS of `shared`."""
    fewest = len(pool)
    for size in range(1, MAX_TERMS + 1):
        for combination in itertools.combinations(shared, size):
            fewest = min(fewest, sum(1 for terms in pool if all(term in terms for term in combination)))
    return fewest


def bounds(lang: str) -> dict:
    data = madial.DEFAULT_DATA / lang
    memories = madial.load_memories(data / "memories.jsonl")
    with contextlib.redirect_stderr(io.StringIO()):  # recall_madial warns of the data's known quirks
        dialogues = madial.load_dialogues(data / "dialogues.jsonl", memories, lang)
    terms = {memory_id: memory_terms(memory) for memory_id, memory in memories.items()}
    hits = dict.fromkeys(KS, 0)
    shares = dict.fromkeys(KS, 0.0)
    no_distinctive = 0
    for dialogue in dialogues:
        said = set()
        for utterance in [*dialogue.history, dialogue.query]:
            said.update(textsearch.terms(utterance.content))
        pool = [terms[i] for i, memory in memories.items() if memory.user == dialogue.user]
        relevant = [i for i in dialogue.relevant if i in terms and memories[i].user == dialogue.user]
        fewest = [fewest_holding(sorted(said & terms[i]), pool) for i in relevant]
        for k in KS:
            reachable = sum(1 for count in fewest if count <= k)
            hits[k] += reachable > 0
            shares[k] += min(reachable, k) / max(1, len(dialogue.relevant))
        holders = {term: sum(term in terms_ for terms_ in pool) for term in said}
        if not any(holders[term] <= DISTINCTIVE * len(pool) for i in relevant for term in said & terms[i]):
            no_distinctive += 1
    n = len(dialogues)
    return {
        "dialogues": n,
        **{f"hit@{k}": hits[k] / n for k in KS},
        **{f"R@{k}": shares[k] / n for k in KS},
        "no_distinctive_term": no_distinctive,
    }


def main() -> int:
    print("| lang | " + " | ".join(f"hit@{k} bound" for k in KS) + " | "
          + " | ".join(f"R@{k} bound" for k in KS) + " | no distinctive shared term |")
    print("|---|" + "---:|" * (2 * len(KS) + 1))
    for lang in ("en", "zh"):
        row = bounds(lang)
        cells = [f"{row[f'hit@{k}']:.3f}" for k in KS] + [f"{row[f'R@{k}']:.3f}" for k in KS]
        print(f"| {lang} | " + " | ".join(cells) + f" | {row['no_distinctive_term']} of {row['dialogues']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Long-term memory retrieval: which facts and older turns fit a question.

Both come from the full-text indexes (bm25), searched with the question's
quoted terms. Facts are matched against key and value, a key match weighing
double. Older turns are only those outside the recent window (the prompt
builder passes where that window starts); a matching turn comes back with the
turn that answers it, or the question it answers, so the model sees the whole
exchange.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from . import textsearch, tokens
from .store import Fact, Store, Turn

DEFAULT_RECALL_TOKENS = 1000
DEFAULT_RECALL_LIMIT = 8


@dataclass
class MemoryItem:
    kind: str  # "fact" or "turn"
    id: int  # fact id, or the id of the matching turn
    text: str  # as it goes into the prompt
    score: float  # bm25, higher is better; comparable within a kind
    tokens: int
    matched: list[str]
    ref: str | None = None
    key: str | None = None
    value: str | None = None
    turns: list[Turn] = field(default_factory=list)


def fact_line(fact: Fact) -> str:
    return f"- {fact.key}: {fact.value}"


def _stamp(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def turn_line(turn: Turn) -> str:
    speaker = turn.name or turn.role
    note = " (incomplete)" if turn.status != "complete" else ""
    return f"[{_stamp(turn.created_at)} {speaker}{note}] {turn.content}"


def _matched(query_terms: tuple[str, ...], text: str) -> list[str]:
    present = set(textsearch.terms(text))
    return [term for term in query_terms if term in present]


def _exchange(store: Store, hit: Turn, before_id: int | None) -> list[Turn]:
    """The hit together with its partner turn, when that is also old enough."""
    partner_role = "assistant" if hit.role == "user" else "user"
    pair = [hit]
    for other in store.neighbours(hit):
        if other.role != partner_role or other.status == "unanswered":
            continue
        if before_id is not None and other.id >= before_id:
            continue
        if (other.id > hit.id) == (hit.role == "user"):
            pair.append(other)
    return sorted(pair, key=lambda turn: turn.id)


def recall(
    store: Store,
    question: str,
    *,
    model: str,
    session_id: int | None,
    before_id: int | None,
    budget_tokens: int = DEFAULT_RECALL_TOKENS,
    limit: int = DEFAULT_RECALL_LIMIT,
    include_facts: bool = True,
) -> list[MemoryItem]:
    """The memories for `question`, best first, within `budget_tokens` and `limit`."""
    query = textsearch.match_query(question)
    if query is None or limit <= 0 or budget_tokens <= 0:
        return []
    candidates: list[MemoryItem] = []
    if include_facts:
        for hit in store.search_facts(query, limit=limit):
            fact = hit.record
            text = fact_line(fact)
            candidates.append(
                MemoryItem(
                    kind="fact", id=fact.id, text=text, score=hit.score,
                    tokens=tokens.count_tokens(text, model),
                    matched=_matched(query.terms, f"{fact.key} {fact.value}"),
                    ref=fact.ref, key=fact.key, value=fact.value,
                )
            )
    if session_id is not None:
        seen: set[int] = set()
        for hit in store.search_turns(session_id, query, before_id=before_id, limit=limit):
            if hit.record.id in seen:
                continue
            exchange = _exchange(store, hit.record, before_id)
            seen.update(turn.id for turn in exchange)
            text = "\n".join(turn_line(turn) for turn in exchange)
            candidates.append(
                MemoryItem(
                    kind="turn", id=hit.record.id, text=text, score=hit.score,
                    tokens=tokens.count_tokens(text, model),
                    matched=_matched(query.terms, hit.record.content),
                    ref=hit.record.ref, turns=exchange,
                )
            )
    return _fill_budget(_interleave(candidates), budget_tokens, limit)


def _interleave(items: list[MemoryItem]) -> list[MemoryItem]:
    """One ranked list from two: bm25 scores are only comparable within an index,
    so each kind is ranked by its score relative to its own best match."""
    best = {}
    for item in items:
        best[item.kind] = max(best.get(item.kind, 0.0), item.score)
    return sorted(
        items,
        key=lambda item: (item.score / best[item.kind]) if best[item.kind] > 0 else 0.0,
        reverse=True,
    )


def _fill_budget(items: list[MemoryItem], budget: int, limit: int) -> list[MemoryItem]:
    chosen, used = [], 0
    for item in items:
        if len(chosen) == limit:
            break
        if used + item.tokens <= budget:
            chosen.append(item)
            used += item.tokens
    return chosen

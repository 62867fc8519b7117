"""Long-term memory retrieval: which facts and older turns fit a question.

The query is the question's terms plus, more lightly, the terms of the turns
just before it: the conversation so far says what the question is about
("and how do I test it?"). Each earlier turn counts CONTEXT_DECAY times less
than the one after it, the assistant's turns half as much as the user's, and
a long turn a little less than a short one.

Candidates come from the full-text indexes (FTS5, any term matching). They
are then scored with bm25 under those query weights: a term counts by how
rare it is in the store (idf), how often it occurs in the candidate, and the
candidate's length; a fact's key counts KEY_WEIGHT times its value. Ties go
to the more recent. Older turns are only those outside the recent window, and
a matching turn comes back with the turn that answers it (or the question it
answers), so the model sees the whole exchange.

A question can say when and by whom something was said ("what did you tell
me about the deploy key last week?", kvchat.mentions). An older turn whose
speaker matches gains SPEAKER_WEIGHT times the best text score among the
candidate turns, one whose time falls in a named period TIME_WEIGHT times
it; the turns of a named period are candidates even without a matching word,
and the words that named the period are not searched for. Such a question
points back to that exchange rather than at the conversation of the moment,
so its turns are scored without the context's terms (MENTION_CONTEXT). All
three were kept because they help on bench/recall_turns.py (docs/retrieval.md).

Every item carries why it was chosen: the matched terms and the parts of its
score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from . import budgets, mentions, textsearch, tokens
from .store import USABLE_STATUSES, Fact, Store, TermStats, Turn

CONTEXT_TURNS = 8
CONTEXT_DECAY = 0.85
ASSISTANT_FACTOR = 0.5
# The heaviest context terms kept. Eight turns of Chinese yield hundreds of
# bigrams and characters, and every one of them was searched for and counted
# in every candidate: at 100,000 facts this cap takes prompt building from
# about 70 to 48 ms with the MADial scores unchanged (docs/retrieval.md).
CONTEXT_MAX_TERMS = 128
# A long turn brings many terms, and a Chinese one twice as many again (a
# bigram and a character for each character): left alone they outweigh the
# short turns and the question itself. A context turn of more than
# CONTEXT_PLAIN_TERMS terms has its weight divided by (terms /
# CONTEXT_PLAIN_TERMS) ** CONTEXT_LENGTH_DAMPING (docs/retrieval.md).
CONTEXT_PLAIN_TERMS = 8
CONTEXT_LENGTH_DAMPING = 0.25
KEY_WEIGHT = 2.0
BM25_K1 = 1.2
BM25_B = 0.75
CANDIDATES = 100
SEEK_TERMS = 20
SEEK_MAX_ROWS = 2000
SEEK_MIN_TERMS = 3
SPEAKER_WEIGHT = 0.5
TIME_WEIGHT = 1.0
MENTION_CONTEXT = 0.0


@dataclass
class MemoryItem:
    kind: str  # "fact" or "turn"
    id: int  # fact id, or the id of the matching turn
    text: str  # as it goes into the prompt
    score: float  # higher is better; comparable within a kind
    tokens: int
    matched: list[str]
    parts: dict[str, float] = field(default_factory=dict)  # the score, by where it came from
    ref: str | None = None
    key: str | None = None
    value: str | None = None
    turns: list[Turn] = field(default_factory=list)


@dataclass
class Query:
    """Weighted terms: from the question, and from the conversation before it."""

    question: dict[str, float]
    context: dict[str, float]
    weights: dict[str, float] = field(init=False)  # both together

    def __post_init__(self) -> None:
        self.weights = dict(self.context)
        for term, weight in self.question.items():
            self.weights[term] = self.weights.get(term, 0.0) + weight


def build_query(question: str, context: list[Turn]) -> Query:
    """`context` is the turns before the question, oldest first."""
    asked = dict.fromkeys(textsearch.terms(question), 1.0)
    earlier: dict[str, float] = {}
    for distance, turn in enumerate(reversed(context[-CONTEXT_TURNS:]), 1):
        weight = CONTEXT_DECAY**distance * (ASSISTANT_FACTOR if turn.role == "assistant" else 1.0)
        said = textsearch.terms(turn.content)
        if len(said) > CONTEXT_PLAIN_TERMS:
            weight *= (CONTEXT_PLAIN_TERMS / len(said)) ** CONTEXT_LENGTH_DAMPING
        for term in said:
            earlier[term] = earlier.get(term, 0.0) + weight
    if len(earlier) > CONTEXT_MAX_TERMS:
        # Kept in their first-seen order among equals, so the choice is stable.
        earlier = dict(sorted(earlier.items(), key=lambda item: -item[1])[:CONTEXT_MAX_TERMS])
    return Query(question=asked, context=earlier)


def fact_line(fact: Fact) -> str:
    return f"- {fact.key}: {fact.value}"


def _stamp(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def turn_line(turn: Turn) -> str:
    speaker = turn.name or turn.role
    note = " (incomplete)" if turn.status != "complete" else ""
    return f"[{_stamp(turn.created_at)} {speaker}{note}] {turn.content}"


class _Scorer:
    """bm25 under the query's weights, for candidates from one index."""

    def __init__(self, query: Query, stats: TermStats):
        self.query = query
        self.average_length = stats.average_length
        self.held = {term: stats.containing.get(term, 0) for term in query.weights}
        self.idf = {
            term: math.log(1 + (stats.documents - held + 0.5) / (held + 0.5))
            for term, held in self.held.items()
        }
        # Candidates are read for the query's terms only.
        self.counts = textsearch.QueryCounts(query.weights)

    def __call__(self, fields: list[tuple[dict, float]], length: float):
        """Score, score parts and matched terms of one candidate; `fields` are
        (term counts, weight) pairs: a fact's key and value, or a turn. Counts
        of terms outside the query are ignored."""
        norm = 1 - BM25_B + BM25_B * length / self.average_length
        weights, asked = self.query.weights, self.query.question
        tf: dict[str, float] = {}
        from_key: dict[str, float] = {}
        for position, (counts, field_weight) in enumerate(fields):
            for term, count in counts.items():
                if term in weights:
                    tf[term] = tf.get(term, 0.0) + count * field_weight
                    if position == 0 and len(fields) > 1:
                        from_key[term] = count * field_weight
        parts = {"question": 0.0, "context": 0.0, "key": 0.0}
        for term, frequency in tf.items():
            scaled = frequency / norm
            weight = weights[term]
            contribution = weight * self.idf[term] * scaled * (BM25_K1 + 1) / (scaled + BM25_K1)
            share = asked.get(term, 0.0) / weight
            parts["question"] += contribution * share
            parts["context"] += contribution * (1 - share)
            parts["key"] += contribution * from_key.get(term, 0.0) / frequency
        score = parts["question"] + parts["context"]
        return score, {name: round(value, 4) for name, value in parts.items()}, list(tf)


def _exchange(store: Store, hit: Turn, before_id: int | None) -> list[Turn]:
    """The hit together with its partner turn, when that is also old enough."""
    partner_role = "assistant" if hit.role == "user" else "user"
    pair = [hit]
    for other in store.neighbours(hit):
        if other.role != partner_role or other.status not in USABLE_STATUSES:
            continue
        if before_id is not None and other.id >= before_id:
            continue
        if (other.id > hit.id) == (hit.role == "user"):
            pair.append(other)
    return sorted(pair, key=lambda turn: turn.id)


def _seek(score_of: _Scorer, query: Query) -> textsearch.MatchQuery | None:
    """The query that finds candidates.

    FTS5 ranks every row that holds any of the query's terms, so a common
    word makes a search slow in a large store, while the rows it alone brings
    score little. Candidates are therefore sought with the terms that say
    most (weight times idf), at most SEEK_TERMS of them, and only terms held
    by at most SEEK_MAX_ROWS rows, unless fewer than SEEK_MIN_TERMS are that
    rare: then the rarest others make up the number. Every term still counts
    in the final score.
    """
    held = {term: rows for term, rows in score_of.held.items() if rows}
    telling = sorted(held, key=lambda term: -query.weights[term] * score_of.idf[term])
    chosen = [term for term in telling if held[term] <= SEEK_MAX_ROWS][:SEEK_TERMS]
    if len(chosen) < SEEK_MIN_TERMS:
        common = sorted((term for term in held if term not in chosen), key=held.get)
        chosen += common[: SEEK_MIN_TERMS - len(chosen)]
    return textsearch.weighted_query({term: query.weights[term] for term in chosen}, max_terms=SEEK_TERMS)


def _facts(store: Store, query: Query, match) -> list[MemoryItem]:
    score_of = _Scorer(query, store.term_stats("facts", match.terms))
    seek = _seek(score_of, query)
    if seek is None:
        return []
    scored = []
    for hit in store.search_facts(seek, limit=CANDIDATES):
        fact = hit.record
        fields = [(score_of.counts.key(fact.key), KEY_WEIGHT), (score_of.counts(fact.value), 1.0)]
        score, parts, matched = score_of(fields, len(fact.key) + len(fact.value))
        item = MemoryItem(
            kind="fact", id=fact.id, text=fact_line(fact), score=score, parts=parts, matched=matched,
            tokens=0, ref=fact.ref, key=fact.key, value=fact.value,
        )
        scored.append((score, fact.updated_at, item))
    scored.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
    return [item for _, _, item in scored]


def _turns(
    store: Store, question: str, query: Query, context: list[Turn], session_id: int, before_id: int | None,
    now: datetime,
) -> list[MemoryItem]:
    periods = mentions.periods(question, now) if TIME_WEIGHT else []
    if periods:
        # The words that named a time are matched against the turns' times, not their text.
        query = build_query(mentions.without(question, [period.span for period in periods]), context)
    hits: dict[int, Turn] = {}
    match = textsearch.weighted_query(query.weights)
    stats = store.term_stats("turns", match.terms) if match is not None else None
    if match is not None:
        seek = _seek(_Scorer(query, stats), query)
        if seek is not None:
            for hit in store.search_turns(session_id, seek, before_id=before_id, limit=CANDIDATES):
                hits[hit.record.id] = hit.record
    for turn in _turns_in(store, session_id, periods, before_id):
        hits.setdefault(turn.id, turn)
    if not hits:
        return []
    names = {turn.name for turn in [*hits.values(), *context] if turn.name} if SPEAKER_WEIGHT else ()
    named = mentions.speakers(question, names, periods) if SPEAKER_WEIGHT else []
    if (periods or named) and MENTION_CONTEXT != 1.0:
        scaled = {term: weight * MENTION_CONTEXT for term, weight in query.context.items()} if MENTION_CONTEXT else {}
        query = Query(question=query.question, context=scaled)
    score_of = _Scorer(query, stats) if stats is not None else None
    items = []
    for turn in hits.values():
        if score_of is not None:
            score, parts, matched = score_of([(score_of.counts(turn.content), 1.0)], turn.tokens)
        else:
            score, parts, matched = 0.0, {"question": 0.0, "context": 0.0}, []
        parts.pop("key", None)
        items.append(MemoryItem(
            kind="turn", id=turn.id, text=turn_line(turn), score=score, parts=parts,
            matched=matched, tokens=0, ref=turn.ref, turns=[turn],
        ))
    # The bonuses scale with the best text score, so that they weigh the same
    # against the text whatever the question's length; 1 when nothing matched.
    unit = max((item.score for item in items), default=0.0) or 1.0
    for item in items:
        turn = item.turns[0]
        speaker = SPEAKER_WEIGHT * unit if any(_spoke(turn, who) for who in named) else 0.0
        when = TIME_WEIGHT * unit if any(turn.created_at in period for period in periods) else 0.0
        item.parts.update(speaker=round(speaker, 4), time=round(when, 4))
        item.score += speaker + when
    items.sort(key=lambda item: (item.score, item.id), reverse=True)
    return items


def _spoke(turn: Turn, who: mentions.Speaker) -> bool:
    if who.name is not None:
        return (turn.name or "").lower() == who.name.lower()
    return turn.role == who.role


def _turns_in(store: Store, session_id: int, periods: list[mentions.Period], before_id: int | None) -> list[Turn]:
    """The session's newest usable turns (up to CANDIDATES) older than
    `before_id` in any of `periods`."""
    return store.turns_in_periods(
        session_id, [(period.start, period.end) for period in periods], before_id=before_id, limit=CANDIDATES
    )


def recall(
    store: Store,
    question: str,
    *,
    model: str,
    session_id: int | None,
    before_id: int | None,
    context: list[Turn] = (),
    budget_tokens: int = budgets.RECALL_TOKENS,
    limit: int = budgets.RECALL_LIMIT,
    facts: bool = True,
    now: datetime | None = None,
) -> list[MemoryItem]:
    """The memories for `question`, best first, within `budget_tokens` and `limit`.

    `context` is the conversation just before the question (oldest first);
    only turns older than `before_id` are recalled, and facts only with `facts`.
    Times the question names ("yesterday") are read relative to `now`, in its
    zone (default: the local time now).
    """
    if limit <= 0 or budget_tokens <= 0:
        return []
    context = list(context)
    query = build_query(question, context)
    match = textsearch.weighted_query(query.weights)
    candidates = _facts(store, query, match) if facts and match is not None else []
    if session_id is not None:
        now = now or datetime.now().astimezone()
        candidates += _turns(store, question, query, context, session_id, before_id, now)
    return _fill_budget(store, _interleave(candidates), budget_tokens, limit, model, before_id)


def _interleave(items: list[MemoryItem]) -> list[MemoryItem]:
    """One ranked list from two: scores are only comparable within an index,
    so each kind is ranked by its score relative to its own best match."""
    best: dict[str, float] = {}
    for item in items:
        best[item.kind] = max(best.get(item.kind, 0.0), item.score)
    return sorted(
        items,
        key=lambda item: (item.score / best[item.kind]) if best[item.kind] > 0 else 0.0,
        reverse=True,
    )


def _cannot_fit(turns: list[Turn], room: int) -> bool:
    """Whether an exchange is too long for the room left, by the counts
    stored with its turns: its lines in the prompt hold all their text and
    more. Once the budget is nearly full this spares counting the tokens of
    most of the candidates, the long ones first (10 ms of some prompts at a
    million turns). The counts are the model's own (Turn.counted_for); the
    budget holds either way: what is taken is counted."""
    return sum(turn.tokens for turn in turns) > room + 8


def _fill_budget(
    store: Store, ranked: list[MemoryItem], budget: int, limit: int, model: str, before_id: int | None
) -> list[MemoryItem]:
    """The best items that fit; a turn is completed into its exchange only
    when it is reached, and counted only when its stored counts say it may
    fit; a turn already shown is not repeated."""
    chosen, used, shown = [], 0, set()
    for item in ranked:
        if len(chosen) == limit:
            break
        if item.kind == "turn":
            if item.id in shown:
                continue
            item.turns = [turn.counted_for(model) for turn in _exchange(store, item.turns[0], before_id)]
            shown.update(turn.id for turn in item.turns)
            if _cannot_fit(item.turns, budget - used):
                continue
            item.text = "\n".join(turn_line(turn) for turn in item.turns)
        item.tokens = tokens.count_tokens(item.text, model)
        if used + item.tokens <= budget:
            chosen.append(item)
            used += item.tokens
    return chosen


def fill_budget(
    store: Store, ranked: list[MemoryItem], *, budget_tokens: int, limit: int, model: str, before_id: int | None
) -> list[MemoryItem]:
    """The best of `ranked` within `budget_tokens` and `limit`, chosen as
    `recall` chooses its own, for rankings made elsewhere (kvchat.vectors fuses
    keyword and vector results). Items are changed in place: each chosen turn
    is completed into its exchange, and every chosen item's tokens are counted."""
    return _fill_budget(store, ranked, budget_tokens, limit, model, before_id)

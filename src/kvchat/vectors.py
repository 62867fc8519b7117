"""Vector recall: memories whose meaning is near the question's, fused with
keyword recall. Optional, and off unless the caller turns it on.

Facts and the session's older turns are embedded through the server's
``/v1/embeddings`` endpoint (`ModelClient.embed`) and the vectors kept in the
``embeddings`` table, one row per item and embedding model, with the SHA-256
of the item's text. An item is embedded again only when its text changes (a
fact given a new value) or when the model's vectors change length (another
model served under the same name, as llama.cpp serves whatever it loaded), so
a recall embeds only text it has not seen: the question, and items that are
new since the last recall.

- What is embedded: a fact as ``key: value``, a turn as its content, each cut
  to its first MAX_EMBED_TOKENS tokens: local servers refuse longer input
  (llama.cpp embeds a text in one batch, 512 tokens by default), and the
  opening of a long turn says what it is about.
- The query: the question alone and, when a user turn comes before it, that
  turn's end followed by the question, in the same request as the new items.
  An item's similarity is the better of the two: a follow-up ("and how do I
  test it?") needs the conversation to mean anything, while a question that
  changes the subject must not be dragged back to the old one.
- Nearest items: cosine similarity (unit vectors, so a dot product) over facts
  and turns together, since one embedding space makes them comparable; at
  least `min_similarity` (nearest is not the same as near: unrelated memories
  must stay out), the best VECTOR_CANDIDATES of them. Turns are those of the
  session older than `before_id`, as for keyword recall.
- Fusion: reciprocal rank fusion (Cormack, Clarke and Büttcher, 2009). An
  item scores 1 / (RRF_K + rank) for each list it is in: keyword recall's
  result and the vector ranking. Ranks need no common scale, which bm25 and
  cosine do not have. A vector hit on either turn of an exchange that keyword
  recall found counts for that exchange. The fused ranking fills the same
  budget and limit as keyword recall (`recall.fill_budget`), so a turn comes
  with its partner question or answer.

Every item says why it was chosen: keyword items keep their matched terms and
score parts, a vector hit adds its cosine similarity as the part "vector",
and `score` is the fused score. The keyword items passed in are never changed:
when the endpoint fails, `ModelError` propagates and the caller still has them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from . import recall as recall_module
from . import tokens
from .model_calls import embed_call
from .model_client import EMBED_BATCH
from .recall import MemoryItem
from .store import Embedded, Fact, Store, Turn

if TYPE_CHECKING:
    import numpy

    from .model_client import ModelClient

RRF_K = 60
# Unrelated text scores about 0.1 to 0.2 with OpenAI's text-embedding-3 models
# and paraphrases 0.5 and up; some local models (bge, nomic) score everything
# higher, and want a higher floor.
MIN_SIMILARITY = 0.3
MAX_EMBED_TOKENS = 400
QUERY_CONTEXT_CHARS = 300
VECTOR_CANDIDATES = recall_module.CANDIDATES


def fact_text(fact: Fact) -> str:
    """What a fact's vector is made from."""
    return f"{fact.key}: {fact.value}"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def query_texts(question: str, context: Sequence[Turn]) -> list[str]:
    """The texts a question is embedded as (see the module docstring)."""
    queries = [question] if question.strip() else []
    before = next((turn for turn in reversed(context) if turn.role == "user" and turn.content.strip()), None)
    if queries and before is not None:
        queries.append(f"{before.content[-QUERY_CONTEXT_CHARS:]}\n{question}")
    return queries


class SemanticRecall:
    """Vector recall over one store, through one embeddings model."""

    def __init__(
        self, store: Store, client: ModelClient, embedding_model: str, *, min_similarity: float = MIN_SIMILARITY
    ) -> None:
        self.store = store
        self.client = client
        self.embedding_model = embedding_model
        self.min_similarity = min_similarity
        self._session_id: int | None = None  # the session recall is running for, whose usage embeddings are

    def recall(
        self,
        question: str,
        *,
        context: Sequence[Turn] = (),
        session_id: int | None,
        before_id: int | None,
        keyword: list[MemoryItem],
        budget_tokens: int,
        limit: int,
        model: str,
        facts: bool = True,
    ) -> list[MemoryItem]:
        """The memories for `question`: `keyword` (keyword recall's result for
        it) fused with the nearest facts (unless `facts` is off) and older
        turns, best first, within `budget_tokens` and `limit` (tokens counted
        for the chat `model`).

        Embeds new and changed items and the question first. Raises
        `ModelError` when the embeddings endpoint fails; `keyword` is left as
        it was, for the caller to use instead.
        """
        if limit <= 0 or budget_tokens <= 0:
            return []
        self._session_id = session_id
        items = self.store.embedded_facts(self.embedding_model) if facts else []
        if session_id is not None:
            items += self.store.embedded_turns(session_id, self.embedding_model, before_id=before_id)
        queries = query_texts(question, context)
        hits: list[tuple[MemoryItem, float]] = []
        if items and queries:  # nothing to search, or nothing to search with: no request
            hits = self._nearest(items, queries)
        ranked = _fuse(keyword, hits)
        return recall_module.fill_budget(
            self.store, ranked, budget_tokens=budget_tokens, limit=limit, model=model, before_id=before_id
        )

    # -- embedding ------------------------------------------------------------

    def _nearest(self, items: list[Embedded], queries: list[str]) -> list[tuple[MemoryItem, float]]:
        """The items at least `min_similarity` near a query, nearest first, with
        their similarity; embeds (and stores) what has no current vector first."""
        import numpy as np

        texts = [fact_text(e.record) if isinstance(e.record, Fact) else e.record.content for e in items]
        digests = [digest(text) for text in texts]
        blobs: list[bytes | None] = [
            e.vector if e.vector is not None and e.digest == digests[i] else None for i, e in enumerate(items)
        ]
        stale = [i for i, blob in enumerate(blobs) if blob is None and texts[i].strip()]
        query_vectors = self._embed(queries, stale, items, texts, digests, blobs)
        size = 4 * query_vectors.shape[1]  # bytes of one float32 vector
        # Vectors of another length come from another model under this name:
        # they cannot be compared, so they are made again.
        other = [i for i, blob in enumerate(blobs) if blob is not None and len(blob) != size]
        if other:
            self._embed([], other, items, texts, digests, blobs)
        usable = [i for i, blob in enumerate(blobs) if blob is not None and len(blob) == size]
        dimensions = size // 4
        if not usable:
            return []
        matrix = np.frombuffer(b"".join(blobs[i] for i in usable), dtype="<f4").reshape(len(usable), dimensions)
        similarity = (matrix @ query_vectors.T).max(axis=1)
        # Nearest first; among equals, the newer item (the later in `items`).
        order = np.lexsort((-np.arange(len(usable)), -similarity))
        hits = []
        for position in order[:VECTOR_CANDIDATES]:
            score = float(similarity[position])
            if score < self.min_similarity:
                break
            hits.append((_item(items[usable[position]].record, score), score))
        return hits

    def _embed(
        self, queries: list[str], indexes: list[int], items: list[Embedded], texts: list[str],
        digests: list[str], blobs: list[bytes | None],
    ) -> numpy.ndarray:
        """Embed `queries` and the items at `indexes`, in requests of
        EMBED_BATCH texts, storing each request's item vectors as it comes
        back (a failure later loses none of them) and putting them in `blobs`.
        Returns the query vectors, one row each."""
        import numpy as np

        pending: list[tuple[int | None, str]] = [(None, query) for query in queries]
        pending += [(i, self._clipped(texts[i])) for i in indexes]
        query_rows = []
        for start in range(0, len(pending), EMBED_BATCH):
            chunk = pending[start : start + EMBED_BATCH]
            sent = [text for _, text in chunk]
            embeddings = self.client.embed(sent, model=self.embedding_model)
            self.store.record_model_call(embed_call(self._session_id, embeddings, sent, self.embedding_model))
            rows = []
            for (i, _), vector in zip(chunk, embeddings.vectors):
                unit = _unit(vector)
                if i is None:
                    query_rows.append(unit)
                    continue
                blobs[i] = unit.tobytes()
                record = items[i].record
                kind = "fact" if isinstance(record, Fact) else "turn"
                rows.append((kind, record.id, digests[i], len(unit), blobs[i]))
            if rows:
                self.store.save_embeddings(self.embedding_model, rows)
        if any(isinstance(items[i].record, Fact) for i in indexes):
            # Facts changed since vectors were last stored: some may be gone.
            self.store.prune_embeddings()
        return np.stack(query_rows) if query_rows else np.zeros((0, 0), dtype="<f4")

    def _clipped(self, text: str) -> str:
        # A token is at least one byte, so a text of fewer bytes fits as it is
        # and needs no tokenizing.
        if len(text.encode("utf-8")) <= MAX_EMBED_TOKENS:
            return text
        return tokens.truncate(text, MAX_EMBED_TOKENS, self.embedding_model) or text[:MAX_EMBED_TOKENS]


def _unit(vector: list[float]) -> numpy.ndarray:
    """`vector` as little-endian float32 of length 1 (as it is, if all zeros)."""
    import numpy as np

    array = np.asarray(vector, dtype="<f4")
    norm = float(np.linalg.norm(array))
    return array / np.float32(norm) if norm > 0 else array


def _item(record: Fact | Turn, similarity: float) -> MemoryItem:
    parts = {"vector": round(similarity, 4)}
    if isinstance(record, Fact):
        return MemoryItem(
            kind="fact", id=record.id, text=recall_module.fact_line(record), score=similarity, tokens=0,
            matched=[], parts=parts, ref=record.ref, key=record.key, value=record.value,
        )
    return MemoryItem(
        kind="turn", id=record.id, text=recall_module.turn_line(record), score=similarity, tokens=0,
        matched=[], parts=parts, ref=record.ref, turns=[record],
    )


def _fuse(keyword: list[MemoryItem], hits: list[tuple[MemoryItem, float]]) -> list[MemoryItem]:
    """One ranking from keyword recall's list and the vector hits (reciprocal
    rank fusion), of copies: the keyword items stay as they were."""
    fused: dict[tuple[str, int], MemoryItem] = {}
    score: dict[tuple[str, int], float] = {}
    exchange_of: dict[int, tuple[str, int]] = {}  # turn id -> the keyword exchange holding it
    for rank, item in enumerate(keyword, 1):
        key = (item.kind, item.id)
        fused[key] = replace(item, matched=list(item.matched), parts=dict(item.parts), turns=list(item.turns))
        score[key] = 1 / (RRF_K + rank)
        for turn in item.turns:
            exchange_of[turn.id] = key
    counted: set[tuple[str, int]] = set()
    for rank, (hit, similarity) in enumerate(hits, 1):
        key = exchange_of.get(hit.id, ("turn", hit.id)) if hit.kind == "turn" else ("fact", hit.id)
        if key in counted:  # the other turn of an exchange already counted
            continue
        counted.add(key)
        if key in fused:
            fused[key].parts["vector"] = round(similarity, 4)
        else:
            fused[key] = hit
        score[key] = score.get(key, 0.0) + 1 / (RRF_K + rank)
    for key, item in fused.items():
        item.score = round(score[key], 6)
    # Stable: on equal scores keyword recall's order, then the vector order.
    return sorted(fused.values(), key=lambda item: item.score, reverse=True)

"""Full-text search on PostgreSQL, with the terms and query semantics kvchat
has on SQLite.

PostgreSQL's text parsers leave a run of Chinese characters whole and its
stemmers are not kvchat's, so kvchat hands it ready-made terms, as it hands
them to FTS5 (kvchat.textsearch.analyze: stemmed, stopwords dropped, CJK runs
in bigrams and characters). Each turn's and fact's terms are kept as a
`tsvector` in turns_search and facts_search (migration 0007), beside the
turn's session and the fact's user, under GIN indexes. The vectors are
written as literals whose every lexeme is quoted, so PostgreSQL stores the
terms exactly as given and parses none of them again; the Store writes them
in the transaction that writes the text, and the foreign keys delete them
with it.

Queries are `tsquery` literals of quoted lexemes (OR for recall, AND for
history search), so user text never reaches PostgreSQL's query syntax.
Terms are stored and sought with Latin letters' diacritics removed, as
SQLite's tokenizer (unicode61, remove_diacritics 2) does to them there: "creme"
finds "crème" on both engines.
A fact's key terms carry weight A and its value's weight D, and ts_rank
weighs A twice D: a key match counts double, as bm25's column weights do
on SQLite.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from . import textsearch

# tsvector's limits: a lexeme under 2 KB, at most 256 positions each, none
# above 16,383, and 1 MB in all. Past them a turn is indexed without
# positions, which ranking by frequency does not need.
MAX_LEXEME_BYTES = 2046
MAX_POSITION = 16_383
MAX_POSITIONS_PER_TERM = 256
MAX_VECTOR_BYTES = 900_000

# A sequence moved on after every committed write to a store (Store._write),
# whose last value tells a process whether the term counts it keeps still hold.
GENERATION = "kvchat_search_generation"
NEXT_GENERATION = f"SELECT nextval('{GENERATION}')"

# ts_rank's weights for D, C, B, A: a fact's value (D) half its key (A).
FACT_WEIGHTS = "{0.5, 0, 0, 1.0}"


def fold(term: str) -> str:
    """`term` without the diacritics of Latin letters (é -> e, ü -> u, and
    combining accents), as unicode61 removes them."""
    if term.isascii():
        return term
    kept = []
    for char in term:
        code = ord(char)
        if 0x300 <= code <= 0x36F:  # a combining accent on its own
            continue
        if 0xC0 <= code <= 0x24F or 0x1E00 <= code <= 0x1EFF:
            char = unicodedata.normalize("NFD", char)[0]
        kept.append(char)
    return "".join(kept)


def _lexeme(term: str) -> str:
    return "'" + fold(term).replace("\\", "\\\\").replace("'", "''") + "'"


def _usable(term: str) -> bool:
    return len(term.encode()) <= MAX_LEXEME_BYTES


def vector(parts: Iterable[tuple[list[str], str]]) -> str:
    """A tsvector literal of (terms, weight) parts, positions running on
    from one part to the next ('' is weight D, PostgreSQL's default)."""
    positions: dict[str, list[str]] = {}
    position = 0
    for terms, weight in parts:
        for term in terms:
            position += 1
            if not _usable(term):
                continue
            held = positions.setdefault(_lexeme(term), [])
            if len(held) < MAX_POSITIONS_PER_TERM:
                held.append(f"{min(position, MAX_POSITION)}{weight}")
    literal = " ".join(f"{lexeme}:{','.join(at)}" for lexeme, at in positions.items())
    if len(literal.encode()) <= MAX_VECTOR_BYTES:
        return literal
    # Too many different terms even without positions (a pasted log of
    # megabytes): the first ones that fit are indexed, and the text is stored whole.
    kept, size = [], 0
    for lexeme in positions:
        size += len(lexeme.encode()) + 1
        if size > MAX_VECTOR_BYTES:
            break
        kept.append(lexeme)
    return " ".join(kept)


def turn_vector(content: str) -> str:
    return vector([(textsearch.analyze(content), "")])


def fact_vector(key: str, value: str) -> str:
    return vector([(textsearch.index_key(key).split(), "A"), (textsearch.analyze(value), "")])


def _query(terms: Iterable[str], operator: str) -> str | None:
    return f" {operator} ".join(_lexeme(term) for term in dict.fromkeys(terms) if _usable(term)) or None


def any_of(terms: Iterable[str]) -> str | None:
    """A tsquery literal matching any of `terms`; None when there are none."""
    return _query(terms, "|")


def all_of(terms: Iterable[str]) -> str | None:
    """A tsquery literal matching all of `terms`; None when there are none."""
    return _query(terms, "&")


def index_turns(db, turns: Iterable[tuple[int, int, str]]) -> None:
    """Index (id, session id, text) turns just written, or written anew."""
    from sqlalchemy import text

    rows = [dict(id=id, session=session, terms=turn_vector(content)) for id, session, content in turns]
    if rows:
        db.execute(text(
            "INSERT INTO turns_search (turn_id, session_id, terms) "
            "VALUES (:id, :session, CAST(:terms AS tsvector)) "
            "ON CONFLICT (turn_id) DO UPDATE SET session_id = excluded.session_id, terms = excluded.terms"
        ), rows)


def index_facts(db, facts: Iterable[tuple[int, str, str, str]]) -> None:
    """Index (id, user, key, value) facts just written, or written anew."""
    from sqlalchemy import text

    rows = [dict(id=id, user=user, terms=fact_vector(key, value)) for id, user, key, value in facts]
    if rows:
        db.execute(text(
            "INSERT INTO facts_search (fact_id, user_name, terms) "
            "VALUES (:id, :user, CAST(:terms AS tsvector)) "
            "ON CONFLICT (fact_id) DO UPDATE SET user_name = excluded.user_name, terms = excluded.terms"
        ), rows)

"""How kvchat reads text for search: one analyzer for the index and the query.

Every piece of text (a turn, a fact's key and value, a question) goes through
`analyze`: Unicode-normalised and lower-cased, English words stemmed (Snowball
English, so "running" finds "run"), stopwords of either language dropped, and
runs of Chinese, Japanese or Korean characters split into overlapping bigrams
plus their single characters, since those scripts put no spaces between
words. The full-text index receives the analyzed terms (see `index_text`,
which SQLite calls from the index triggers) and stores them with a plain
tokenizer, so the index and the query agree term for term.

Changing `analyze` changes what is in the index: it needs a migration that
rebuilds the full-text tables (as 0002 does).

Queries are never built by pasting user text into MATCH: every term is a
quoted string, so no input can change a query's meaning or break its syntax.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cache, lru_cache

# Han (with extensions and compatibility ideographs), kana and hangul syllables.
_CJK = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
    "\u3040-\u309f\u30a0-\u30ff\uac00-\ud7af"
)
_PATTERNS = {
    "cjk run": f"[{_CJK}]+",
    "cjk run or word": f"([{_CJK}]+)|([^\\W_{_CJK}]+)",  # a CJK run, or a word of letters and digits
    "word": f"[^\\W_{_CJK}]+",
    "ascii word": "[a-z0-9]+",  # "word" on lower-cased ASCII text, and faster
}


@cache
def _pattern(name: str) -> re.Pattern[str]:
    """One of _PATTERNS, compiled on first use: commands that never analyze
    text (`kvchat history`, `--help`) import this module through the store
    and should not pay for compiling these large Unicode classes."""
    return re.compile(_PATTERNS[name])

ENGLISH_STOPWORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each few for from further had hadn't has hasn't have haven't
    having he he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll
    i'm i've if in into is isn't it it's its itself let's me more most mustn't my myself no nor
    not of off on once only or other ought our ours ourselves out over own same shan't she she'd
    she'll she's should shouldn't so some such than that that's the their theirs them themselves
    then there there's these they they'd they'll they're they've this those through to too under
    until up very was wasn't we we'd we'll we're we've were weren't what what's when when's where
    where's which while who who's whom why why's with won't would wouldn't you you'd you'll you're
    you've your yours yourself yourselves also just like get got really yes yeah ok okay oh hey
    hi hello please thanks thank know think want tell say said will s t d ll m re ve""".split()
)

# Characters that carry grammar rather than meaning; a bigram made only of
# these (我们, 什么, 这个, 一个 ...) says nothing about what a text is about.
CHINESE_STOP_CHARS = frozenset(
    "的了是在我你他她它们这那吗呢吧啊呀哦嗯和与也都就有没不个一么什怎样要会能可以到说"
    "对很还又而且但所因为把被让给着过得地之其"
)


@cache
def _stemmer():
    import Stemmer  # PyStemmer: the Snowball stemmers, compiled

    return Stemmer.Stemmer("english")


def _cjk_terms(run: str) -> list[str]:
    stop = CHINESE_STOP_CHARS
    if len(run) == 1:
        return [] if run in stop else [run]
    terms = [run[i : i + 2] for i in range(len(run) - 1) if not (run[i] in stop and run[i + 1] in stop)]
    terms += [ch for ch in run if ch not in stop]
    return terms


def analyze(text: str) -> list[str]:
    """The search terms of `text`, in order, repeats kept."""
    text = unicodedata.normalize("NFKC", text).lower()
    if text.isascii():
        # No CJK to split: the words, stemmed in one call. Most turns and
        # facts are in English, and this takes 30 µs for a turn of 70 words
        # against 52 for the loop below (a third of an import's time is the
        # analyzer).
        words = _words(text)
        return _stemmer().stemWords(words) if words else []
    return _mixed_terms(text)


def _words(text: str) -> list[str]:
    """The words of normalised, lower-cased `text` that are search terms,
    unstemmed."""
    return [
        word for word in _pattern("ascii word" if text.isascii() else "word").findall(text)
        if word not in ENGLISH_STOPWORDS and (len(word) > 1 or word.isdigit())
    ]


def _mixed_terms(text: str) -> list[str]:
    """`analyze` for normalised text that may hold CJK runs among its words."""
    terms: list[str] = []
    words: list[str] = []
    word_places: list[int] = []  # where in `terms` each of `words` goes, stemmed
    for run, word in _pattern("cjk run or word").findall(text):
        if run:
            terms += _cjk_terms(run)
        elif word not in ENGLISH_STOPWORDS and (len(word) > 1 or word.isdigit()):
            word_places.append(len(terms))
            words.append(word)
            terms.append(word)
    for place, stem in zip(word_places, _stemmer().stemWords(words) if words else ()):
        terms[place] = stem
    return terms


def index_text(text: str) -> str:
    """What the full-text index stores for `text` (called by SQLite)."""
    return " ".join(analyze(text))


def index_key(key: str) -> str:
    """What the index stores for a fact's key: its words without the first
    level when there are several. That level is a namespace ("user",
    "project", "note") shared by whole groups of keys; matching it would bring
    every user.* fact to a question about "a user table"."""
    levels = key.split(".")
    return index_text(" ".join(levels[1:] if len(levels) > 1 else levels))


@lru_cache(maxsize=8192)
def key_term_counts(key: str) -> dict[str, int]:
    """`term_counts` for a fact's key, as `index_key` sees it."""
    return dict(Counter(index_key(key).split()))


def terms(text: str) -> list[str]:
    """The distinct search terms of `text`, in order of first appearance."""
    return list(dict.fromkeys(analyze(text)))


@lru_cache(maxsize=8192)
def term_counts(text: str) -> dict[str, int]:
    """How often each term occurs in `text` (cached: recall scores the same
    facts again and again in one process). Do not modify the result."""
    return dict(Counter(analyze(text)))


class QueryCounts:
    """How often each of a query's terms occurs in a text: `term_counts`
    restricted to those terms, without analyzing the whole text.

    Scoring a candidate needs nothing else, and this is several times cheaper
    than `analyze`, which builds every bigram and character of a Chinese text.
    The counts are the same: a query's CJK term (a bigram, or a single
    character that is not a stop character) occurs as a term exactly where it
    occurs in the normalised text, and the words are stemmed as `analyze`
    stems them.
    """

    def __init__(self, terms):
        cjk_run = _pattern("cjk run")
        self.words = frozenset(term for term in terms if not cjk_run.match(term))
        # The CJK terms by their first character: a text is searched only for
        # the terms whose first character it holds. A query with eight turns
        # of Chinese context has a hundred such terms, and most candidates
        # hold few of their characters (an English fact, none).
        self.cjk: dict[str, list[tuple[int, str]]] = {}
        for place, term in enumerate(terms):
            if cjk_run.match(term):
                self.cjk.setdefault(term[0], []).append((place, term))
        self._cjk_firsts = frozenset(self.cjk)

    def __call__(self, text: str) -> dict[str, int]:
        text = unicodedata.normalize("NFKC", text).lower()
        counts: dict[str, int] = {}
        if self.words:
            words = _words(text)
            if words:
                wanted = self.words
                for stem in _stemmer().stemWords(words):
                    if stem in wanted:
                        counts[stem] = counts.get(stem, 0) + 1
        found = []
        for first in self._cjk_firsts.intersection(text) if self.cjk and not text.isascii() else ():
            for place, term in self.cjk[first]:
                count = text.count(term)
                if count and len(term) == 2 and term[0] == term[1]:
                    count = _overlapping(text, term)
                if count:
                    found.append((place, term, count))
        # In the query's order, as the scores' sums and `matched` always were:
        # a set's order changes from one process to the next.
        for _, term, count in sorted(found):
            counts[term] = count
        return counts

    def key(self, key: str) -> dict[str, int]:
        """The counts for a fact's key, as `index_key` sees it."""
        levels = key.split(".")
        return self(" ".join(levels[1:] if len(levels) > 1 else levels))


def _overlapping(text: str, term: str) -> int:
    count, start = 0, text.find(term)
    while start >= 0:
        count += 1
        start = text.find(term, start + 1)
    return count


@dataclass(frozen=True)
class MatchQuery:
    """An FTS5 MATCH expression, the terms it was made from, and their weights."""

    expression: str
    terms: tuple[str, ...]
    weights: dict[str, float]


@lru_cache(maxsize=256)
def _whole_word(word: str) -> re.Pattern[str] | None:
    if _pattern("cjk run").search(word):
        return None  # Chinese and Japanese put no spaces around their words
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)")


def holds_word(text: str, word: str) -> int:
    """1 when `text`, lower-cased, holds the lower-case `word` as a word of
    its own ("the" is not in "there"), or for a CJK word anywhere; else 0.
    For the words the index leaves out (SQLite calls it, as
    kvchat_holds_word, in `kvchat history --search`)."""
    text = text.lower()
    pattern = _whole_word(word)
    return int(word in text if pattern is None else pattern.search(text) is not None)


def postgres_word_pattern(word: str) -> str | None:
    """`holds_word` as a PostgreSQL regular expression for ~* (its \\m and
    \\M are the ends of a word), for an ASCII word; else None, and the
    caller checks the word with `holds_word`: in a database of the C locale
    PostgreSQL knows no letters beyond ASCII, so \\m would never match
    before "é" or "я"."""
    if not word.isascii():  # CJK among them
        return None
    return r"\m" + re.sub(r"(\W)", r"\\\1", word) + r"\M"


def quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def weighted_query(weights: dict[str, float], *, max_terms: int = 48) -> MatchQuery | None:
    """An OR-query of the `max_terms` heaviest terms, or None when there are none."""
    chosen = sorted(weights, key=lambda term: -weights[term])[:max_terms]
    if not chosen:
        return None
    return MatchQuery(
        " OR ".join(quote(term) for term in chosen),
        tuple(chosen),
        {term: weights[term] for term in chosen},
    )


def match_query(text: str, *, max_terms: int = 48) -> MatchQuery | None:
    """An OR-query of the terms of `text`, each weighing the same."""
    return weighted_query(dict.fromkeys(terms(text), 1.0), max_terms=max_terms)

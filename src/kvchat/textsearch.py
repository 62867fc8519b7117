"""Text as the full-text index sees it, and questions turned into safe queries.

SQLite's unicode61 tokenizer splits on spaces and punctuation, so a run of
Chinese (or Japanese, Korean) characters would become one enormous token and
match nothing. kvchat therefore rewrites CJK runs into overlapping character
bigrams before text reaches the index, and does the same to a question before
it becomes a query: both sides are segmented by the one function below.

Queries are never built by pasting user text into MATCH: every term is a
quoted string, so no input can change a query's meaning or break its syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Han (with extensions and compatibility ideographs), kana and hangul syllables.
_CJK = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
    "\u3040-\u309f\u30a0-\u30ff\uac00-\ud7af"
)
_CJK_RUN = re.compile(f"[{_CJK}]+")
_TOKEN = re.compile(f"[{_CJK}]+|[^\\W_{_CJK}]+")

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


def _bigrams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def index_text(text: str) -> str:
    """The form of `text` that goes into the full-text index."""
    if not _CJK_RUN.search(text):
        return text
    return _CJK_RUN.sub(lambda m: " " + " ".join(_bigrams(m.group())) + " ", text)


def terms(text: str) -> list[str]:
    """The meaningful search terms of `text`, in order of first appearance."""
    seen: dict[str, None] = {}
    for token in _TOKEN.findall(text.lower()):
        if _CJK_RUN.fullmatch(token):
            for gram in _bigrams(token):
                if not all(ch in CHINESE_STOP_CHARS for ch in gram):
                    seen.setdefault(gram, None)
        elif token not in ENGLISH_STOPWORDS and (len(token) > 1 or token.isdigit()):
            seen.setdefault(token, None)
    return list(seen)


@dataclass(frozen=True)
class MatchQuery:
    """An FTS5 MATCH expression together with the terms it was made from."""

    expression: str
    terms: tuple[str, ...]


def match_query(text: str, *, max_terms: int = 64) -> MatchQuery | None:
    """An OR-query of the quoted terms of `text`, or None when it has none."""
    found = terms(text)[:max_terms]
    if not found:
        return None
    quoted = ['"' + term.replace('"', '""') + '"' for term in found]
    return MatchQuery(" OR ".join(quoted), tuple(found))

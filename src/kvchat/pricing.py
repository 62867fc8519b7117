"""What well-known models cost, for the estimates of `kvchat usage`.

Prices are US dollars per million input (prompt) and output (completion)
tokens at standard rates: no batch or cached-input discounts, so an estimate
errs high. They change, so PRICES_CHECKED says when they were last compared,
and with what: on that date, with stored copies of OpenAI's published pricing
(platform.openai.com/docs/pricing) that agreed with each other, not with the
page itself, which kvchat's developers could not reach. Check them there.

A model is priced only under its exact name (provider prefixes such as
"openai/" aside) or a dated snapshot listed here: a snapshot can cost
another price than its alias (gpt-4o-2024-05-13 cost twice what gpt-4o does),
and a longer name is often another model (gpt-4.5 is not gpt-4). Anything
else, local models included, has no price, and `cost` says so with None
rather than guess.
"""

from __future__ import annotations

from typing import NamedTuple

PRICES_CHECKED = "2026-11-26"


class Price(NamedTuple):
    input: float  # dollars per million prompt tokens
    output: float  # dollars per million completion tokens


def _named(price: Price, *names: str) -> dict[str, Price]:
    return dict.fromkeys(names, price)


PRICES: dict[str, Price] = {
    **_named(Price(0.15, 0.60), "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    **_named(Price(2.50, 10.00), "gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"),
    **_named(Price(5.00, 15.00), "gpt-4o-2024-05-13"),
    **_named(Price(2.00, 8.00), "gpt-4.1", "gpt-4.1-2025-04-14"),
    **_named(Price(0.40, 1.60), "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"),
    **_named(Price(0.10, 0.40), "gpt-4.1-nano", "gpt-4.1-nano-2025-04-14"),
    **_named(Price(1.25, 10.00), "gpt-5", "gpt-5-2025-08-07"),
    **_named(Price(0.25, 2.00), "gpt-5-mini", "gpt-5-mini-2025-08-07"),
    **_named(Price(0.05, 0.40), "gpt-5-nano", "gpt-5-nano-2025-08-07"),
    **_named(Price(15.00, 60.00), "o1", "o1-2024-12-17"),
    **_named(Price(1.10, 4.40), "o3-mini", "o3-mini-2025-01-31", "o4-mini", "o4-mini-2025-04-16"),
    **_named(Price(10.00, 30.00), "gpt-4-turbo", "gpt-4-turbo-2024-04-09"),
    **_named(Price(0.50, 1.50), "gpt-3.5-turbo", "gpt-3.5-turbo-0125"),
    **_named(Price(0.02, 0.0), "text-embedding-3-small"),
    **_named(Price(0.13, 0.0), "text-embedding-3-large"),
    **_named(Price(0.10, 0.0), "text-embedding-ada-002"),
}


def price(model: str | None) -> Price | None:
    """The price of `model`, or None when it is not in the table."""
    if not model:
        return None
    name = model.strip().lower()
    if name.startswith("openai/"):
        name = name[len("openai/"):]
    return PRICES.get(name)


def cost(model: str | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """The estimated cost in dollars of these tokens on `model`, or None
    when its price is not known."""
    known = price(model)
    if known is None:
        return None
    return (prompt_tokens * known.input + completion_tokens * known.output) / 1_000_000

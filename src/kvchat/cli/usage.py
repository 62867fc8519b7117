"""`kvchat usage`: the tokens model calls cost, and an estimate of the money."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .common import CliError, JsonOption, console, counted, on_terminal, open_store, print_json, tsv_row
from .sessions import SinceOption, UntilOption, time_range
from .terminal_text import safe_text

KIND_NAMES = {"answer": "answers", "extract": "fact extraction", "summary": "summaries", "embed": "embeddings"}


def _totals(row) -> dict:
    """The fields every row and the total share, cost included."""
    from ..pricing import cost

    priced = [cost(model, spent[1], spent[2]) for model, spent in row.by_model.items()]
    unpriced = sum(spent[0] for (model, spent), value in zip(row.by_model.items(), priced) if value is None)
    known = [value for value in priced if value is not None]
    return {
        "calls": row.calls,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "counted_calls": row.counted_calls,
        "cost_usd": round(sum(known), 6) if known else None,
        "unpriced_calls": unpriced,
        "kinds": {
            kind: {"calls": spent[0], "prompt_tokens": spent[1], "completion_tokens": spent[2]}
            for kind, spent in sorted(row.by_kind.items())
        },
    }


def _grand_total(rows):
    from ..store import UsageRow

    total = UsageRow(key=None)
    for row in rows:
        total.calls += row.calls
        total.prompt_tokens += row.prompt_tokens
        total.completion_tokens += row.completion_tokens
        total.counted_calls += row.counted_calls
        for mine, theirs in ((total.by_kind, row.by_kind), (total.by_model, row.by_model)):
            for part, spent in theirs.items():
                kept = mine.setdefault(part, [0, 0, 0])
                for i in range(3):
                    kept[i] += spent[i]
    return total


def _cost_text(totals: dict) -> str:
    """"$0.0123", with "+" when some calls had no known price; "" when none had one."""
    if totals["cost_usd"] is None:
        return ""
    amount = totals["cost_usd"]
    shown = "<$0.0001" if 0 < amount < 0.0001 else f"${amount:.4f}"
    return shown + ("+" if totals["unpriced_calls"] else "")


def usage(
    by: Annotated[
        str, typer.Option("--by", metavar="GROUP", help="Sum per session, model, day (local time) or kind of call.")
    ] = "model",
    since: SinceOption = None,
    until: UntilOption = None,
    json_output: JsonOption = False,
) -> None:
    """Tokens in and out of every model call (answers, fact extraction,
    summaries, embeddings) per model, session, day or kind, as the server
    reported them (else as kvchat counted them), with an estimated cost for
    models whose price is known."""
    from ..pricing import PRICES_CHECKED
    from ..store import Store

    if by not in Store.USAGE_GROUPS:
        raise CliError(f"--by: {by!r} is not one of {', '.join(Store.USAGE_GROUPS)}")
    since_at, until_at = time_range(since, until)
    with open_store() as store:
        rows = store.usage(by, since=since_at, until=until_at)
        sessions = store.sessions_by_id([row.key for row in rows if row.key is not None]) if by == "session" else {}
    shown = []
    for row in rows:
        if by == "session":
            session = sessions.get(row.key)
            head = {"session_id": row.key, "session": session.name if session else None,
                    "title": session.title if session else None}
        else:
            head = {by: row.key}
        shown.append({**head, **_totals(row)})
    total = _totals(_grand_total(rows))
    if json_output:
        print_json({
            "by": by, "since": since_at, "until": until_at, "prices_checked": PRICES_CHECKED, "rows": shown,
            "total": total,
        })
        return

    def label(item: dict) -> str:
        if by == "session":
            return item["session"] or "(no session, or deleted)"
        return item[by] or "(unknown)"

    if not on_terminal():
        for item in shown:
            sys.stdout.write(tsv_row(label(item), item["calls"], item["prompt_tokens"], item["completion_tokens"],
                                     _cost_text(item)))
        return
    from rich.table import Table
    from rich.text import Text

    out = console()
    if not rows:
        out.print("No model calls recorded" + (" in that time." if since_at or until_at else " yet."))
        return
    table = Table(box=None, header_style="bold", show_footer=True, footer_style="bold")
    columns = [(by, "total", "left"), ("calls", str(total["calls"]), "right"),
               ("tokens in", f"{total['prompt_tokens']:,}", "right"),
               ("tokens out", f"{total['completion_tokens']:,}", "right"),
               ("est. cost", _cost_text(total), "right")]
    for name, footer, justify in columns:
        table.add_column(name, footer=footer, justify=justify)
    for item in shown:
        table.add_row(safe_text(label(item)), str(item["calls"]), f"{item['prompt_tokens']:,}",
                      f"{item['completion_tokens']:,}", _cost_text(item))
    out.print(table)
    split = " · ".join(
        f"{KIND_NAMES.get(kind, kind)} {spent['prompt_tokens'] + spent['completion_tokens']:,}"
        for kind, spent in total["kinds"].items()
    )
    out.print(Text(f"Tokens by kind of call: {split}.", style="dim"))
    notes = [f"Costs are estimates at list prices checked {PRICES_CHECKED}"]
    if total["unpriced_calls"]:
        notes.append(f"{counted(total['unpriced_calls'], 'call')} used models with no known price and are not in "
                     "them (+)")
    if total["counted_calls"]:
        whose = counted(total["counted_calls"], "call's", "calls'")
        notes.append(f"{whose} tokens are kvchat's own count, not the server's report (or from before kvchat noted which)")
    out.print(Text("; ".join(notes) + ".", style="dim"))


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)

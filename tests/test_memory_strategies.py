"""The memory strategies, judged by what the model server received: the
window keeps exactly N turns, the token budget holds for any text, and the
summary is folded from new turns only and stays within its size."""

from __future__ import annotations

import pytest

from conftest import TEST_KEY
from kvchat import summaries, tokens
from kvchat.conversation import AskOptions, Conversation
from kvchat.model_client import ModelClient
from kvchat.prompt import PromptOptions
from kvchat.store import NewTurn

MODEL = "gpt-4o-mini"


def turn(i: int, text: str | None = None) -> NewTurn:
    content = text if text is not None else f"turn {i}: " + "lorem ipsum " * 5
    return NewTurn(
        role="user" if i % 2 == 0 else "assistant", content=content,
        tokens=tokens.count_tokens(content, MODEL),
    )


@pytest.fixture
def conversation(store, model):
    with ModelClient(api_key=TEST_KEY, base_url=model.base_url) as client:
        yield Conversation(store, client, secrets=[TEST_KEY])


def ask(conversation, question, session="s", **prompt_options):
    options = AskOptions(prompt=PromptOptions(model=MODEL, **prompt_options), extract="off")
    return conversation.ask(session, question, options)


def answer_request(model) -> dict:
    """The last request that asked for an answer (not for a summary)."""
    return [body for body in model.chat_requests if not _is_summary(body)][-1]


def summary_requests(model) -> list[dict]:
    return [body for body in model.chat_requests if _is_summary(body)]


def _is_summary(body: dict) -> bool:
    return body["messages"][0]["content"].startswith("You keep a running summary")


def recent_messages(body: dict) -> list[dict]:
    return body["messages"][1:-1]


# -- window -------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 2, 5, 12])
def test_the_window_strategy_sends_exactly_the_last_n_turns(store, model, conversation, window):
    store.add_turns("s", [turn(i) for i in range(30)])
    ask(conversation, "and now?", memory="window", window=window)
    sent = recent_messages(answer_request(model))
    assert [m["content"].split(":")[0] for m in sent] == [f"turn {i}" for i in range(30 - window, 30)]


def test_the_window_counts_turns_not_tokens_and_ignores_the_token_budget(store, model, conversation):
    store.add_turns("s", [turn(i, f"turn {i}: " + "long text " * 200) for i in range(8)])
    ask(conversation, "and now?", memory="window", window=4, memory_tokens=10)
    assert len(recent_messages(answer_request(model))) == 4


def test_a_window_larger_than_the_context_keeps_what_fits(store, model, conversation):
    store.add_turns("s", [turn(i, f"turn {i}: " + "long text " * 500) for i in range(10)])
    prompt = ask(conversation, "and now?", memory="window", window=10, context_tokens=4096).prompt
    sent = recent_messages(answer_request(model))
    assert 0 < len(sent) < 10
    assert sent[-1]["content"].startswith("turn 9")
    assert prompt.tokens <= 4096 - 2048


# -- token --------------------------------------------------------------------

MIXED = [
    "ok",
    "用中文写一个快速排序的函数，并解释它的时间复杂度。" * 3,
    "Here is the function:\n```python\ndef f(x):\n    return x * 2\n```\n" * 4,
    "謝謝！這個很有幫助。",
    "A much longer explanation of the trade-offs between the two designs. " * 12,
    "是",
]


@pytest.mark.parametrize("budget", [30, 100, 250, 600])
def test_the_token_budget_holds_for_short_long_and_cjk_turns(store, model, conversation, budget):
    texts = [MIXED[i % len(MIXED)] for i in range(24)]
    store.add_turns("s", [turn(i, text) for i, text in enumerate(texts)])
    prompt = ask(conversation, "总结一下?", memory="token", memory_tokens=budget).prompt
    sent = recent_messages(answer_request(model))
    cost = tokens.messages_tokens(sent, MODEL) - tokens.REPLY_PRIMER
    assert prompt.section("recent turns").tokens == cost
    if len(sent) > 1 or sent[0]["content"] == texts[-1]:
        assert cost <= budget
        if len(sent) > 1:
            assert sent[0]["role"] == "user"  # strict chat templates want a dialog to open with a question
        # The next older turn does not fit; or it is an answer, and its question does not fit with it.
        older = [tokens.message_tokens(tokens.count_tokens(text, MODEL)) for text in texts[: -len(sent)]]
        assert cost + older[-1] > budget or (len(sent) % 2 == 0 and cost + older[-1] + older[-2] > budget)
    else:  # the newest turn alone is over the budget: it is kept, shortened
        assert "left out here" in sent[0]["content"]


# -- summary ------------------------------------------------------------------


def test_turns_that_leave_the_window_are_summarised_and_the_summary_leads_the_prompt(
    store, model, conversation
):
    store.add_turns("s", [turn(i) for i in range(20)])
    model.queue_answer("The user and the assistant discussed turns 0 to 15.")
    model.queue_answer("An answer.")
    result = ask(conversation, "what did we say?", memory="summary", memory_tokens=100, summary_tokens=50)

    [request] = summary_requests(model)
    folded = request["messages"][1]["content"]
    kept = recent_messages(answer_request(model))
    first_kept = int(kept[0]["content"].split(":")[0].split()[1])
    assert "(none yet)" in folded
    for i in range(20):
        assert (f"turn {i}:" in folded) == (i < first_kept)
    system = answer_request(model)["messages"][0]["content"]
    assert "discussed turns 0 to 15" in system
    assert system.index("discussed turns") < system.index("</memory>")
    stored = store.summary(result.session.id)
    assert stored.last_turn_id == result.question.id - (20 - first_kept) - 1
    assert stored.turn_count == first_kept
    assert result.prompt.section("summary").tokens > 0
    assert not result.warnings


def test_the_summary_is_updated_from_the_new_turns_only(store, model, conversation):
    store.add_turns("s", [turn(i) for i in range(12)])
    model.queue_answer("SUMMARY-ONE")
    model.queue_answer("first answer")
    ask(conversation, "first question", memory="summary", memory_tokens=60)
    first_folded = summary_requests(model)[0]["messages"][1]["content"]

    store.add_turns("s", [turn(i) for i in range(12, 18)])
    model.queue_answer("SUMMARY-TWO")
    model.queue_answer("second answer")
    ask(conversation, "second question", memory="summary", memory_tokens=60)
    second_folded = summary_requests(model)[1]["messages"][1]["content"]

    assert "SUMMARY-ONE" in second_folded
    for i in range(12):
        if f"turn {i}:" in first_folded:
            assert f"turn {i}:" not in second_folded, f"turn {i} was summarised twice"
    assert "first question" in second_folded or "first answer" in second_folded
    assert "SUMMARY-TWO" in answer_request(model)["messages"][0]["content"]


def test_no_summary_request_while_everything_fits_the_window(store, model, conversation):
    store.add_turns("s", [turn(i) for i in range(4)])
    ask(conversation, "hello", memory="summary", memory_tokens=4000)
    assert summary_requests(model) == []


@pytest.mark.parametrize("summary_tokens", [16, 40, 200])
def test_the_summary_stays_within_its_size_even_when_the_model_runs_on(
    store, model, conversation, summary_tokens
):
    store.add_turns("s", [turn(i) for i in range(16)])
    model.queue_answer("This summary goes on and on, far past what was asked for. " * 60)
    result = ask(conversation, "q", memory="summary", memory_tokens=50, summary_tokens=summary_tokens)
    stored = store.summary(result.session.id)
    assert 0 < stored.tokens <= summary_tokens
    assert tokens.count_tokens(stored.content, MODEL) == stored.tokens
    assert summary_requests(model)[0]["max_tokens" if "max_tokens" in summary_requests(model)[0]
                                      else "max_completion_tokens"] == summary_tokens


def test_a_failed_summary_never_blocks_the_answer_and_is_retried_later(store, model, conversation):
    store.add_turns("s", [turn(i) for i in range(16)])
    model.queue_error(500, "summariser is down")
    model.queue_error(500, "summariser is down")
    model.queue_error(500, "summariser is down")
    model.queue_answer("the answer")
    result = ask(conversation, "q1", memory="summary", memory_tokens=50)
    assert result.answer.content == "the answer"
    assert result.answer.status == "complete"
    assert any("summary" in warning and "try again" in warning for warning in result.warnings)
    assert store.summary(result.session.id) is None

    model.queue_answer("A summary at last.")
    model.queue_answer("second answer")
    second = ask(conversation, "q2", memory="summary", memory_tokens=50)
    assert store.summary(second.session.id).content == "A summary at last."
    assert "turn 0:" in summary_requests(model)[-1]["messages"][1]["content"]
    assert not second.warnings


def test_a_long_backlog_is_folded_a_few_chunks_per_question(store, model, conversation):
    store.add_turns("s", [turn(i, f"turn {i}: " + "words " * 900) for i in range(40)])
    ask(conversation, "q", memory="summary", memory_tokens=200, context_tokens=128_000)
    assert len(summary_requests(model)) == summaries.MAX_CALLS
    session = store.session("s")
    first = store.summary(session.id)
    ask(conversation, "q again", memory="summary", memory_tokens=200, context_tokens=128_000)
    assert store.summary(session.id).last_turn_id > first.last_turn_id


def test_a_summary_written_meanwhile_by_another_process_is_not_overwritten(store):
    session = store.open_session("s")
    assert store.save_summary(session.id, "one", tokens=1, last_turn_id=5, turn_count=5,
                              model=None, covers_after=None)
    assert not store.save_summary(session.id, "stale", tokens=1, last_turn_id=7, turn_count=7,
                                  model=None, covers_after=None)
    assert store.summary(session.id).content == "one"


def test_without_facts_the_recall_budget_goes_to_older_turns(store, model, conversation):
    store.set_fact("project.database", "PostgreSQL 16 with pgvector", source="user")
    store.add_turns("s", [turn(0, "turn 0: we picked PostgreSQL for the database"), turn(1, "turn 1: ok")]
                    + [turn(i) for i in range(2, 30)])
    with_facts = ask(conversation, "which database did we pick?", memory="window", window=2).prompt
    assert [item.kind for item in with_facts.memories][:1] == ["fact"]
    without = ask(conversation, "which database did we pick?", memory="window", window=2, facts=False).prompt
    assert without.memories and all(item.kind == "turn" for item in without.memories)
    assert "pgvector" not in answer_request(model)["messages"][0]["content"]
    assert "we picked PostgreSQL" in answer_request(model)["messages"][0]["content"]


def test_with_a_small_context_the_summary_still_fits_and_no_turn_falls_between(store, model, conversation):
    """The recent turns leave room for a whole summary, so with a 4k-context
    local model and the default budgets every turn is either summarised or
    sent, and a summary request comes only every few questions."""
    store.add_turns("s", [turn(i, f"turn {i}: " + "some words " * 40) for i in range(6)])
    for n in range(12):
        # Long answers push turns out of the window. (A summary request, when
        # one comes, takes the queued text instead: either way turns pile up.)
        model.queue_answer(f"answer {n}: " + "more words " * 40)
        result = ask(conversation, f"question {n}: " + "words " * 30, memory="summary",
                     context_tokens=4096, summary_tokens=300)
        prompt = result.prompt
        assert prompt.tokens <= 4096 - 2048
        assert (prompt.summary is None) == (store.summary(result.session.id) is None), "a stored summary is sent"
        if prompt.summary is not None:
            unsent = store.turns_between(result.session.id, after_id=prompt.summary.last_turn_id,
                                         before_id=prompt.recent[0].id)
            assert unsent == [], "a turn neither summarised nor sent"
        assert not result.warnings
    assert store.summary(result.session.id) is not None
    assert 0 < len(summary_requests(model)) <= 6


def test_a_summary_cut_off_by_the_token_limit_is_asked_for_again_shorter(store, model, conversation):
    store.add_turns("s", [turn(i) for i in range(16)])
    model.queue_answer("A summary that ran out of room and stopped in the mid", finish_reason="length")
    model.queue_answer("A shorter, whole summary.")
    result = ask(conversation, "q", memory="summary", memory_tokens=50, summary_tokens=200)
    first, second = summary_requests(model)
    assert "at most 100 words" in first["messages"][0]["content"]
    assert "at most 50 words" in second["messages"][0]["content"]
    assert store.summary(result.session.id).content == "A shorter, whole summary."
    assert not result.warnings


def test_a_summary_cut_off_twice_is_not_stored_and_the_answer_still_comes(store, model, conversation):
    store.add_turns("s", [turn(i) for i in range(16)])
    model.queue_answer("cut", finish_reason="length")
    model.queue_answer("cut again", finish_reason="length")
    model.queue_answer("the answer")
    result = ask(conversation, "q", memory="summary", memory_tokens=50)
    assert result.answer.content == "the answer"
    assert store.summary(result.session.id) is None
    assert any("cut off" in warning for warning in result.warnings)

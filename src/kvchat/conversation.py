"""One exchange, start to finish: store the question, build the prompt, ask the
model, store the answer, then learn facts from it.

The question is written before the model is called, so a failed call loses
nothing; it stays marked unanswered. Whatever part of an answer arrived before
a failure or Ctrl-C is kept and marked interrupted. Facts the question states
outright are learned by rule as soon as it is stored; the model's extraction
runs after the answer is safely stored and can never fail it (or later, when
the caller asks for that: chat runs it while the user types). With the
"summary" strategy the rolling summary is brought up to date before the prompt
is built, and with vector recall on the embeddings are; either failing only
leaves that part out (with a warning), never the answer.

Secrets (the API key, and whatever kvchat.redaction recognises) are blanked
from the question before it is stored or sent, and from the answer and any
error before they are stored. Facts left out as secrets are recorded, without
their values, for `kvchat facts --skipped`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from . import extraction, summaries, textsearch, tokens
from .model_calls import reply_call
from .model_client import ModelClient, ModelError, Reply
from .prompt import Prompt, PromptOptions, PromptTooLarge, SemanticRecall, build_prompt, summary_fold_points
from .redaction import redact
from .store import NewTurn, Session, Store, Turn

# Extraction answers with a short JSON object; a model that runs on must not
# keep `ask` waiting after the answer is shown.
EXTRACTION_ANSWER_TOKENS = 600
KNOWN_FACTS_SHOWN = 40

# How a finish reason is recorded; anything else (none at all, content_filter)
# means the model did not finish its answer.
STATUS_BY_FINISH = {"stop": "complete", "length": "length", "tool_calls": "complete"}


@dataclass
class AskOptions:
    prompt: PromptOptions
    stream: bool = True
    extract: str = "model"  # model: rules, then a model call; rules: rules only; off
    extract_model: str | None = None  # default: the answering model
    vector: bool = False  # vector recall through the embeddings endpoint
    embedding_model: str = "text-embedding-3-small"


@dataclass
class AskResult:
    session: Session
    question: Turn
    answer: Turn | None
    prompt: Prompt
    prompt_tokens: int
    completion_tokens: int
    usage_reported: bool
    facts: dict[str, str] = field(default_factory=dict)  # key -> created/updated/forgotten
    notes: list[str] = field(default_factory=list)  # what extraction had to say, for --verbose
    warnings: list[str] = field(default_factory=list)  # what the user should know regardless
    # With `learn_later`, the model's fact extraction for the caller to run
    # (it fills `facts` and `notes` as above); None when there is none.
    learning: Callable[[], None] | None = None


class AskFailed(Exception):
    """The model gave no usable answer; the question is stored as unanswered."""

    def __init__(self, message: str, question: Turn):
        super().__init__(message)
        self.question = question


@contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back until the block is done, then raise it.

    A Ctrl-C while an answer (whole or partial, after a first Ctrl-C) is
    being saved would roll the write back and leave the question pending, and
    the answer the user has seen unstored. Signals reach only the main
    thread, so elsewhere there is nothing to hold back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class Conversation:
    """Asks questions in sessions of one store through one model client."""

    def __init__(self, store: Store, client: ModelClient, *, secrets: list[str] = ()):
        self.store = store
        self.client = client
        self.secrets = [s for s in secrets if s]
        # After one failure of the embeddings endpoint this conversation
        # recalls by keywords only, and says so once.
        self.vectors_failed = False

    def ask(
        self,
        session_name: str,
        question: str,
        options: AskOptions,
        on_text: Callable[[str], None] | None = None,
        on_prompt: Callable[[Prompt], None] | None = None,
        learn_later: bool = False,
    ) -> AskResult:
        """Ask `question` in the session `session_name`; see the module
        docstring. With `learn_later` the model's fact extraction is not run
        but handed back as `AskResult.learning`, for the caller to run when it
        suits it (chat runs it while the user types the next question)."""
        model = options.prompt.model
        question = redact(question, self.secrets)
        session = self.store.open_session(session_name)
        asked = self.store.add_turn(
            session.id,
            NewTurn(role="user", content=question, tokens=tokens.count_tokens(question, model),
                    token_encoding=tokens.encoding_name_for_model(model), status="pending", model=model),
        )
        # Explicit statements need no model: they are kept even if the answer
        # fails, and this very question can already use them.
        stated = self._learn_by_rules(asked, options)
        warnings: list[str] = []
        try:
            if options.prompt.memory == "summary":
                warnings += self._update_summary(session.id, asked, options.prompt)
            prompt = build_prompt(
                self.store, question=question, question_tokens=asked.tokens,
                session_id=session.id, before_id=asked.id, options=options.prompt,
                semantic=self.semantic_recall(options),
            )
        except PromptTooLarge as exc:
            self._unanswered(asked, str(exc))
            raise AskFailed(str(exc), asked) from None
        warnings += prompt.notes
        if on_prompt is not None:
            on_prompt(prompt)

        received: list[str] = []
        # What showing the answer raised (the reader of a pipe went away:
        # `kvchat ask ... | head`): the answer is still received and stored
        # whole, and the failure raised only then.
        display_failed: list[Exception] = []

        def collect(piece: str) -> None:
            received.append(piece)
            if on_text is None or display_failed:
                return
            try:
                on_text(piece)
            except Exception as exc:
                display_failed.append(exc)

        try:
            reply = self.client.chat(
                prompt.messages, model=model, max_tokens=options.prompt.answer_tokens,
                stream=options.stream, on_text=collect,
            )
        except ModelError as exc:
            self._keep_what_arrived(asked, received, prompt, model, str(exc))
            raise AskFailed(str(exc), asked) from None
        except KeyboardInterrupt:
            self._keep_what_arrived(asked, received, prompt, model, "interrupted by the user")
            raise

        with ctrl_c_deferred():  # the user has seen the answer: it must be stored
            answer, prompt_tokens, completion_tokens, reported = self._store_answer(
                asked, reply.text, reply, prompt, model
            )
        if display_failed:
            raise display_failed[0]
        result = AskResult(
            session=session, question=asked, answer=answer, prompt=prompt,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            usage_reported=reported, facts=stated, warnings=warnings,
        )
        if options.extract == "model" and answer.status == "complete":
            learning = partial(self._learn_by_model, result, question, answer.content, options)
            if learn_later:
                result.learning = learning
            else:
                learning()
        return result

    def _update_summary(self, session_id: int, asked: Turn, options: PromptOptions) -> list[str]:
        """Fold turns into the summary once the unsummarised ones overflow the
        recent-turn budget: then down to half of it (see summary_fold_points)."""
        overdue_before, fold_before = summary_fold_points(
            self.store, question_tokens=asked.tokens, session_id=session_id,
            before_id=asked.id, options=options,
        )
        _, overflow = summaries.unsummarised(self.store, session_id, overdue_before)
        if not overflow:
            return []
        update = summaries.update_summary(
            self.store, self.client, session_id, window_start=fold_before,
            model=options.model, summary_tokens=options.summary_tokens,
        )
        if update.error is None:
            return []
        return [f"the summary of older turns was not updated ({redact(update.error, self.secrets)}); "
                "kvchat will try again on the next question"]

    def semantic_recall(self, options: AskOptions) -> SemanticRecall | None:
        """Vector recall for the prompt builder, or None when it is off."""
        if not options.vector or self.vectors_failed:
            return None
        from .vectors import SemanticRecall

        engine = SemanticRecall(self.store, self.client, options.embedding_model)

        def recall(question, *, keyword, notes, **arguments):
            try:
                return engine.recall(question, keyword=keyword, **arguments)
            except ModelError as exc:
                self.vectors_failed = True
                notes.append(
                    f"vector recall is off for the rest of this run: the embeddings endpoint "
                    f"failed ({redact(str(exc), self.secrets)}); using keyword recall"
                )
                return keyword

        return recall

    def _learn_by_rules(self, asked: Turn, options: AskOptions) -> dict[str, str]:
        if options.extract == "off":
            return {}
        found = extraction.rule_extraction(asked.content)
        self._note_skipped(found.skipped, "rules", asked.id)
        changes = [(c.key, c.value) for c in found.changes]
        if not changes:
            return {}
        return self.store.apply_facts(changes, source="rules", turn_id=asked.id)

    def _note_skipped(self, skipped: list[extraction.Skipped], source: str, turn_id: int) -> None:
        """Keep a note (never the value) of each fact left out as a secret,
        for `kvchat facts --skipped`."""
        if skipped:
            self.store.record_skipped_facts(
                [(item.key, item.reason) for item in skipped], source=source, turn_id=turn_id
            )

    def _related_facts(self, question: str, answer: str) -> list[tuple[str, str]]:
        """The stored facts this exchange may update or contradict, so the
        model reuses their keys (or forgets them) instead of inventing new ones."""
        query = textsearch.match_query(question + "\n" + answer, max_terms=64)
        if query is None:
            return []
        hits = self.store.search_facts(query, limit=KNOWN_FACTS_SHOWN)
        return [(hit.record.key, hit.record.value) for hit in hits]

    def _keep_what_arrived(self, asked: Turn, received: list[str], prompt, model: str, error: str) -> None:
        """After a failed answer: the part that arrived, marked interrupted, or
        the question marked unanswered when nothing did."""
        with ctrl_c_deferred():
            if received:
                self._store_answer(asked, "".join(received), None, prompt, model, error=error)
            else:
                self._unanswered(asked, error)

    def _unanswered(self, question: Turn, error: str) -> None:
        self.store.update_turn(question.id, status="unanswered", error=redact(error, self.secrets))

    def _store_answer(self, question, text, reply: Reply | None, prompt, model, *, error=None):
        text = redact(text, self.secrets)
        finish = reply.finish_reason if reply else None
        status = STATUS_BY_FINISH.get(finish, "interrupted")
        if error is None and status == "interrupted":
            cause = reply.error if reply is not None else None
            error = str(cause) if cause else f"the answer ended early (finish reason: {finish or 'none'})"
        if error is None and status == "length":
            error = "the answer reached the token limit"
        answer_tokens = tokens.count_tokens(text, model)
        # Servers that report no usage get tiktoken's count of what was sent.
        reported = reply is not None and reply.prompt_tokens is not None
        prompt_tokens = reply.prompt_tokens if reported else prompt.tokens
        completion_tokens = answer_tokens
        if reply is not None and reply.completion_tokens is not None:
            completion_tokens = reply.completion_tokens
        answer = self.store.record_answer(
            question,
            NewTurn(
                role="assistant", content=text, tokens=answer_tokens,
                token_encoding=tokens.encoding_name_for_model(model), status=status,
                model=(reply.model if reply and reply.model else model),
                error=redact(error, self.secrets) if error else None,
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            ),
            reported=reported,
        )
        return answer, prompt_tokens, completion_tokens, reported

    def _learn_by_model(self, result: AskResult, question: str, answer: str, options: AskOptions) -> None:
        """Facts the model finds in the exchange, beyond what the rules found."""
        model = options.extract_model or options.prompt.model
        related = self._related_facts(question, answer)
        messages = extraction.extraction_messages(question, answer, related)
        try:
            reply = self.client.complete_json(
                messages, model=model, schema=extraction.EXTRACTION_SCHEMA, schema_name="facts",
                max_tokens=EXTRACTION_ANSWER_TOKENS,
            )
            self.store.record_model_call(reply_call("extract", result.session.id, reply, messages, model))
            found = extraction.parse_extraction(reply.text)
        except (ModelError, extraction.ExtractionError) as exc:
            result.notes.append(f"fact extraction stored nothing: {exc}")
            return
        self._note_skipped(found.skipped, "model", result.question.id)
        # The model may forget only a fact it was shown as touched by this
        # exchange: any other key it names is a guess, and a guess must not
        # wipe what the user keeps (a small model "forgot" a hand-set editor
        # on "what is 2+2?").
        shown = {key for key, _ in related}
        unfounded = [c.key for c in found.changes
                     if c.value is None and c.key not in shown and c.key not in result.facts]
        if unfounded:
            result.notes.append(f"the model asked to forget {', '.join(unfounded)}, which this exchange does not "
                                "mention; nothing of it was forgotten")
        model_changes = [(c.key, c.value) for c in found.changes
                         if c.key not in result.facts and c.key not in unfounded]
        if model_changes:
            result.facts.update(
                self.store.apply_facts(model_changes, source="model", turn_id=result.question.id)
            )

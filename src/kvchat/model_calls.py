"""The tokens a model call cost, for `kvchat usage` (table model_calls).

The server's own report is the truth (it counts the chat template, images and
whatever its tokenizer does); tiktoken's count of what was sent and received
stands in only for servers that report no usage, and the call is marked as
counted (`reported` False) so `kvchat usage` can say how many figures are
estimates.
"""

from __future__ import annotations

from . import tokens
from .model_client import Embeddings, Reply
from .store import ModelCall


def reply_call(kind: str, session_id: int | None, reply: Reply, messages: list[dict], model: str) -> ModelCall:
    """The call that sent `messages` to `model` and got `reply`."""
    return ModelCall(
        kind=kind, session_id=session_id, model=reply.model or model,
        prompt_tokens=(reply.prompt_tokens if reply.prompt_tokens is not None
                       else tokens.messages_tokens(messages, model)),
        completion_tokens=(reply.completion_tokens if reply.completion_tokens is not None
                           else tokens.count_tokens(reply.text, model)),
        reported=reply.prompt_tokens is not None,
    )


def embed_call(session_id: int | None, embeddings: Embeddings, texts: list[str], model: str) -> ModelCall:
    """The call that embedded `texts` with `model`; embeddings have no completion tokens."""
    reported = embeddings.prompt_tokens is not None
    return ModelCall(
        kind="embed", session_id=session_id, model=model,
        prompt_tokens=(embeddings.prompt_tokens if reported
                       else sum(tokens.count_tokens(text, model) for text in texts)),
        completion_tokens=0, reported=reported,
    )

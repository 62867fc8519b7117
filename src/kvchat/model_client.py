"""kvchat's only gateway to the model: any OpenAI-compatible chat-completions API.

It smooths over the differences between OpenAI and the servers that imitate
it (Ollama, vLLM, llama.cpp, LM Studio, DeepSeek, ...):

* the answer-length limit is sent as ``max_completion_tokens`` to OpenAI and
  as ``max_tokens`` elsewhere; a 400 that names the parameter switches to the
  other one;
* a 400 naming ``stream_options`` retries the stream without a usage report;
* `ModelClient.complete_json` steps down from a strict JSON schema to JSON mode
  to plain text as the server refuses each;
* an answer whose stream breaks off is returned as far as it got
  (``finish_reason`` None), never dropped;
* a refused connection, 408, 409, 429 and 5xx are tried again a few times
  with exponential back-off, or after the wait a ``Retry-After`` header asks
  for; a timeout is not (see `ModelClient._with_retries`);
* every failure becomes a `ModelError` whose text is one line for the user and
  never contains the API key.

What worked is remembered per `ModelClient`, so later calls do not repeat
requests the server refused. This is library code: it never prints. `openai`
is imported only when a request is made, so importing this module is cheap.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import openai

OPENAI_BASE_URL = "https://api.openai.com/v1"

# Texts per embeddings request (OpenAI takes up to 2,048; local servers
# process a request as one batch, so a modest size keeps each one quick).
EMBED_BATCH = 64

KINDS = ("auth", "not_found", "connection", "timeout", "rate_limit", "server", "bad_request", "bad_response")

# Levels of `complete_json`, most to least strict.
_JSON_LEVELS = ("json_schema", "json_object", "text")
# Statuses with which servers refuse a response_format they do not support
# (vLLM and llama.cpp answer 500 when a schema cannot be compiled).
_FORMAT_REFUSALS = frozenset({400, 422, 500, 501})
# Statuses with which servers refuse a request parameter they do not know.
_PARAM_REFUSALS = frozenset({400, 422})
# Words that show an error is about a parameter the server does not accept,
# not about its value ("max_tokens is too large" must not switch parameters).
_UNSUPPORTED_WORDS = ("unsupported", "not supported", "unrecognized", "unknown", "unexpected", "not allowed",
                      "not permitted", "extra_forbidden", "extra inputs", "extra fields")
_OTHER_LIMIT = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}
# Statuses that say "try again shortly" (the ones the openai client retries).
_RETRY_STATUSES = frozenset({408, 409, 429})
# The first pause before another try; it doubles with each try, up to the cap.
RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# The longest Retry-After kvchat waits for, silently, before a try; a server
# that asks for more gets its error reported at once, with the wait it asked for.
MAX_RETRY_AFTER = 60.0


class ModelError(Exception):
    """A failed model call. ``str(e)`` is one line for the user, without the API key.

    `kind` is one of `KINDS`; `status` is the HTTP status when the server answered.
    """

    def __init__(self, message: str, *, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass
class Reply:
    text: str
    finish_reason: str | None  # None: the stream ended without one (interrupted answer)
    prompt_tokens: int | None  # None: the server did not report usage
    completion_tokens: int | None
    model: str  # as the server named it, else as requested
    error: ModelError | None = None  # why an interrupted stream stopped, when known

    @property
    def interrupted(self) -> bool:
        return self.finish_reason is None


@dataclass
class Embeddings:
    vectors: list[list[float]]  # one per text, in order
    prompt_tokens: int | None  # None: the server did not report usage for every request


def resolve_base_url(base_url: str | None) -> str:
    """The URL requests go to: `base_url`, else $OPENAI_BASE_URL, else OpenAI's own."""
    url = base_url or os.environ.get("OPENAI_BASE_URL", "").strip()
    if not url or url.lower() == "none":  # "none" unsets it, as kvchat.config reads it
        url = OPENAI_BASE_URL
    return url.rstrip("/")


def is_openai_url(base_url: str) -> bool:
    """Whether `base_url` is OpenAI's own API (including its regional hosts)."""
    host = (urlsplit(base_url).hostname or "").lower()
    return host == "api.openai.com" or host.endswith(".api.openai.com")


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(headers: Any) -> float | None:
    """The wait, in seconds, that a Retry-After (or Retry-After-Ms) header asks
    for: seconds (fractions accepted, as some servers send them) or an HTTP date."""
    from email.utils import parsedate_to_datetime

    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    return None


def _asks_to_wait(err: openai.APIStatusError) -> str:
    """", try again in N s" when the server asked for a wait of a second or
    more (Retry-After), else ""."""
    asked = _retry_after(err.response.headers)
    return f", try again in {round(asked)} s" if asked is not None and asked >= 1 else ""


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ModelClient:
    """Chat and JSON completions against one OpenAI-compatible server."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 2,
        connect_timeout: float = 10.0,
    ) -> None:
        if not api_key:
            raise ModelError(
                "no API key is set (set OPENAI_API_KEY; local servers accept any value)", kind="auth"
            )
        self._api_key = api_key
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.max_retries = max_retries
        # What the server accepts, learnt as requests are refused.
        self._limit_param = "max_completion_tokens" if is_openai_url(self.base_url) else "max_tokens"
        self._stream_usage = True
        self._json_level = 0
        self._json_level_works = False
        self._client: openai.OpenAI | None = None

    def __repr__(self) -> str:
        return f"ModelClient(base_url={self.shown_url!r})"

    @property
    def shown_url(self) -> str:
        """The base URL as messages show it (config.shown_url)."""
        from .config import shown_url

        return shown_url(self.base_url)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public calls ------------------------------------------------------

    def chat(
        self,
        messages: list[dict],
        *,
        model: str,
        max_tokens: int | None = None,
        stream: bool = True,
        on_text: Callable[[str], None] | None = None,
    ) -> Reply:
        """Ask for an answer; stream its pieces to `on_text` as they arrive.

        A stream that breaks off after some text returns that text with
        ``finish_reason`` None (and `Reply.error` saying why, when known).
        KeyboardInterrupt propagates: the caller has the text `on_text` got.
        Without `stream`, `on_text` is called once with the whole answer.
        Raises `ModelError`.
        """
        result = self._request(messages, model=model, max_tokens=max_tokens, stream=stream)
        if stream:
            return self._read_stream(result, model, on_text)
        reply = self._reply_from(result, model)
        if on_text is not None:
            on_text(reply.text)
        return reply

    def complete_json(
        self,
        messages: list[dict],
        *,
        model: str,
        schema: dict,
        schema_name: str,
        max_tokens: int | None = None,
    ) -> Reply:
        """The JSON answer, its text raw for the caller to parse and validate.

        Asks for `schema` strictly; a server that refuses (400/422/500/501) is
        asked for JSON mode instead, and then for plain text (the messages must
        ask for JSON themselves). The level that worked is kept for later calls.
        Raises `ModelError`.
        """
        level = self._json_level
        while True:
            probing = level < len(_JSON_LEVELS) - 1 and not self._json_level_works
            try:
                completion = self._request(
                    messages,
                    model=model,
                    max_tokens=max_tokens,
                    stream=False,
                    response_format=self._response_format(_JSON_LEVELS[level], schema, schema_name),
                    probe=probing,
                )
            except ModelError as err:
                if probing and err.status in _FORMAT_REFUSALS:
                    level += 1
                    continue
                raise
            reply = self._reply_from(completion, model)
            self._json_level, self._json_level_works = level, True
            return reply

    def embed(self, texts: list[str], *, model: str) -> Embeddings:
        """One vector per text, in order, from the server's embeddings endpoint,
        with the prompt tokens the server reported for them.

        Texts go EMBED_BATCH to a request, so a large backlog is never one
        huge body. Vectors are asked for as plain floats: servers that imitate
        OpenAI do not all decode the client's default base64 request. A
        response with the wrong number of vectors, or vectors of differing or
        no length, is malformed. Raises `ModelError`.
        """
        import openai

        client = self._openai()
        vectors: list[list[float]] = []
        reported: list[int | None] = []
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start : start + EMBED_BATCH]
            try:
                response = self._with_retries(
                    lambda: client.embeddings.create(model=model, input=batch, encoding_format="float"),
                    self.max_retries,
                )
            except (openai.OpenAIError, ValueError) as err:  # ValueError: a body that is not JSON
                hide = isinstance(err, openai.APIStatusError) and err.status_code in (401, 403)
                raise self._error(err, model) from (None if hide else err)
            vectors += self._vectors_from(response, len(batch))
            reported.append(_int_or_none(getattr(getattr(response, "usage", None), "prompt_tokens", None)))
        if len({len(vector) for vector in vectors}) > 1:
            raise self._malformed()
        prompt_tokens = None if None in reported else sum(reported)
        return Embeddings(vectors, prompt_tokens)

    def models(self) -> list[str]:
        """The ids of the models the server offers, sorted. Raises `ModelError`."""
        import openai

        client = self._openai()
        try:
            page = self._with_retries(lambda: client.models.list(), self.max_retries)
            ids = [item.id for item in page]
        except openai.NotFoundError:
            raise ModelError(
                f"the server at {self.shown_url} does not list its models (no /models endpoint; "
                "the base URL usually ends in /v1)", kind="not_found", status=404,
            ) from None
        except (openai.OpenAIError, ValueError) as err:  # ValueError: a body that is not JSON
            hide = isinstance(err, openai.APIStatusError) and err.status_code in (401, 403)
            raise self._error(err, "") from (None if hide else err)
        if not all(isinstance(name, str) for name in ids):
            raise self._malformed()
        return sorted(ids)

    # -- requests ----------------------------------------------------------

    def _openai(self) -> openai.OpenAI:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=openai.Timeout(self.timeout, connect=self.connect_timeout),
                max_retries=0,  # kvchat retries itself: see _with_retries
            )
        return self._client

    def _with_retries(self, send: Callable[[], Any], retries: int) -> Any:
        """`send()`, tried again up to `retries` times while the server is
        unreachable or answers 408, 409, 429 or 5xx.

        The openai client's own retries are off because they retry timeouts
        too: a server that hangs would keep the user waiting three times the
        timeout they set, and the error would then name only one of them. The
        pause doubles from RETRY_DELAY (less up to a quarter, so that many
        clients do not come back in step), or is what the server's Retry-After
        asks for, up to MAX_RETRY_AFTER.
        """
        import openai

        attempt = 0
        while True:
            try:
                return send()
            except openai.APITimeoutError:
                raise
            except (openai.APIConnectionError, openai.APIStatusError) as err:
                pause = None if attempt == retries else self._retry_pause(err, attempt)
                if pause is None:
                    raise
            time.sleep(pause)
            attempt += 1

    @staticmethod
    def _retry_pause(err: Exception, attempt: int) -> float | None:
        """Seconds to wait before trying again after `err`, or None not to."""
        import openai

        if isinstance(err, openai.APIStatusError):
            if err.status_code not in _RETRY_STATUSES and err.status_code < 500:
                return None
            asked = _retry_after(err.response.headers)
            if asked is not None:
                return asked if asked <= MAX_RETRY_AFTER else None
        return min(RETRY_DELAY * 2**attempt, MAX_RETRY_DELAY) * (1 - 0.25 * random.random())

    def _request(
        self,
        messages: list[dict],
        *,
        model: str,
        max_tokens: int | None,
        stream: bool,
        response_format: dict | None = None,
        probe: bool = False,
    ) -> Any:
        """One chat-completions call, adapted to what the server accepts.

        Returns the ChatCompletion (or the Stream); raises `ModelError`.
        """
        import openai

        client = self._openai()
        # Probing what a server supports: a refusal is an answer, not a
        # failure worth retrying with back-off.
        retries = 0 if probe else self.max_retries
        switched_limit = False
        while True:
            params: dict[str, Any] = {"model": model, "messages": messages}
            if max_tokens is not None:
                params[self._limit_param] = max_tokens
            if response_format is not None:
                params["response_format"] = response_format
            if stream:
                params["stream"] = True
                if self._stream_usage:
                    params["stream_options"] = {"include_usage": True}
            try:
                return self._with_retries(lambda: client.chat.completions.create(**params), retries)
            except openai.APIStatusError as err:
                refused = self._refused_param(err)
                if stream and self._stream_usage and refused == "stream_options":
                    self._stream_usage = False
                    continue
                if max_tokens is not None and not switched_limit and refused == self._limit_param:
                    self._limit_param = _OTHER_LIMIT[self._limit_param]
                    switched_limit = True
                    continue
                raise self._error(err, model) from (None if err.status_code in (401, 403) else err)
            except (openai.OpenAIError, ValueError) as err:  # ValueError: a body that is not JSON
                raise self._error(err, model) from err

    @staticmethod
    def _refused_param(err: openai.APIStatusError) -> str | None:
        """The request parameter a 400/422 says the server does not accept."""
        if err.status_code not in _PARAM_REFUSALS:
            return None
        # The whole body too: FastAPI-style servers answer 422 {"detail": [...]}.
        text = f"{err.param or ''} {err.message} {err.body}".lower()
        if not any(word in text for word in _UNSUPPORTED_WORDS):
            return None
        if err.param in ("stream_options", "max_tokens", "max_completion_tokens"):
            return err.param
        # "max_tokens" is not a substring of "max_completion_tokens", so each test is exact.
        for name in ("stream_options", "max_completion_tokens", "max_tokens"):
            if name in text:
                return name
        return None

    @staticmethod
    def _response_format(level: str, schema: dict, schema_name: str) -> dict | None:
        if level == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": schema_name, "schema": schema, "strict": True}}
        if level == "json_object":
            return {"type": "json_object"}
        return None

    # -- answers -----------------------------------------------------------

    def _read_stream(self, stream: Any, model: str, on_text: Callable[[str], None] | None) -> Reply:
        import openai

        parts: list[str] = []
        finish: str | None = None
        usage: Any = None
        name = model

        def reply(error: ModelError | None = None) -> Reply:
            return Reply(
                text="".join(parts),
                finish_reason=None if error else finish,
                prompt_tokens=_int_or_none(getattr(usage, "prompt_tokens", None)),
                completion_tokens=_int_or_none(getattr(usage, "completion_tokens", None)),
                model=name,
                error=error,
            )

        chunks = iter(stream)
        try:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return reply()
                except (openai.OpenAIError, ValueError) as err:
                    # Connection lost, an error event, or a chunk that is not JSON.
                    if finish is not None:
                        return reply()  # the answer was complete; only the tail (usage, [DONE]) is missing
                    error = self._error(err, model, mid_stream=True)
                    if not parts:
                        raise error from err
                    return reply(error)
                usage = getattr(chunk, "usage", None) or usage
                name = getattr(chunk, "model", None) or name
                for choice in getattr(chunk, "choices", None) or ():
                    if getattr(choice, "index", 0) not in (0, None):
                        continue
                    piece = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(piece, str) and piece:
                        parts.append(piece)
                        if on_text is not None:
                            on_text(piece)
                    finish = getattr(choice, "finish_reason", None) or finish
        finally:
            stream.close()

    def _vectors_from(self, response: Any, expected: int) -> list[list[float]]:
        data = getattr(response, "data", None)
        if not isinstance(data, list) or len(data) != expected:
            raise self._malformed()
        # OpenAI answers in input order, but each item says its index: trust that.
        ordered = sorted(data, key=lambda item: _int_or_none(getattr(item, "index", None)) or 0)
        vectors = []
        for item in ordered:
            raw = getattr(item, "embedding", None)
            if not isinstance(raw, list):  # None, or a base64 string we did not ask for
                raise self._malformed()
            try:
                vector = [float(value) for value in raw]
            except (TypeError, ValueError):  # a list holding text or null
                raise self._malformed() from None
            # The sum is not finite when any value is NaN or infinite.
            if not vector or not math.isfinite(sum(vector)):
                raise self._malformed()
            vectors.append(vector)
        return vectors

    def _reply_from(self, completion: Any, model: str) -> Reply:
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise self._malformed()
        choice = choices[0]
        text = getattr(getattr(choice, "message", None), "content", None)
        usage = getattr(completion, "usage", None)
        return Reply(
            text=text if isinstance(text, str) else "",
            finish_reason=getattr(choice, "finish_reason", None),
            prompt_tokens=_int_or_none(getattr(usage, "prompt_tokens", None)),
            completion_tokens=_int_or_none(getattr(usage, "completion_tokens", None)),
            model=getattr(completion, "model", None) or model,
        )

    # -- errors ------------------------------------------------------------

    def _malformed(self) -> ModelError:
        return ModelError(
            f"the model server at {self.shown_url} sent a malformed response (not OpenAI-style JSON)",
            kind="bad_response",
        )

    def _redact(self, text: str) -> str:
        from .redaction import redact  # imported when a request fails, not at start-up

        return _one_line(redact(text, [self._api_key]))

    def _server_says(self, err: Exception) -> str:
        """The server's own explanation, redacted, as a suffix (or "")."""
        body = getattr(err, "body", None)
        message = body.get("message") if isinstance(body, dict) else body
        if not isinstance(message, str) or not message.strip():
            message = getattr(err, "message", None) or str(err)
        return f": {self._redact(message)}" if message else ""

    def _error(self, err: Exception, model: str, *, mid_stream: bool = False) -> ModelError:
        """Translate an exception from the openai client into a one-line ModelError."""
        import openai

        base = self.shown_url
        if isinstance(err, openai.APITimeoutError):
            return ModelError(
                f"timed out waiting for the model server at {base} (timeout {self.timeout:g} s)", kind="timeout"
            )
        if isinstance(err, openai.APIConnectionError):
            cause = err.__cause__
            reason = re.sub(r"^\[Errno -?\d+\]\s*", "", str(cause)) if cause is not None else ""
            reason = f" ({self._redact(reason)})" if reason else ""
            if mid_stream:
                return ModelError(
                    f"the connection to the model server at {base} broke off mid-answer{reason}", kind="connection"
                )
            return ModelError(f"cannot reach the model server at {base}{reason}", kind="connection")
        if isinstance(err, openai.APIStatusError):
            return self._status_error(err, model)
        if isinstance(err, (openai.APIResponseValidationError, ValueError)):
            return self._malformed()
        return ModelError(f"the model server at {base} reported an error{self._server_says(err)}", kind="server")

    def _status_error(self, err: openai.APIStatusError, model: str) -> ModelError:
        status, base = err.status_code, self.shown_url
        if status == 401:
            # The server's text may quote the key back: leave it out.
            message, kind = f"the server rejected the API key (check OPENAI_API_KEY; server: {base})", "auth"
        elif status == 403:
            message = f"the server at {base} refused access with this API key (HTTP 403){self._server_says(err)}"
            kind = "auth"
        elif status == 404:
            message = (
                f"model '{model}' not found at {base} "
                "(check the model name, and the base URL: it usually ends in /v1)"
            )
            kind = "not_found"
        elif status == 429:
            what = "has no quota left" if err.code == "insufficient_quota" else "is rate-limiting requests"
            message = f"the model server at {base} {what} (HTTP 429{_asks_to_wait(err)}){self._server_says(err)}"
            kind = "rate_limit"
        elif status >= 500:
            message = f"the model server at {base} failed (HTTP {status}{_asks_to_wait(err)}){self._server_says(err)}"
            kind = "server"
        else:
            message = f"the model server at {base} rejected the request (HTTP {status}){self._server_says(err)}"
            kind = "bad_request"
        return ModelError(message, kind=kind, status=status)

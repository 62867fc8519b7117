"""A small OpenAI-compatible HTTP server for tests.

Stdlib only: a `ThreadingHTTPServer` on 127.0.0.1 (port 0) in a background
thread. It speaks just enough of the chat-completions API for kvchat's tests
to go through the real `openai` client over real HTTP:

* ``POST /v1/chat/completions``, streamed (SSE, chunked transfer) or not;
* ``POST /v1/embeddings``, with deterministic vectors (see `fake_embedding`);
* ``GET /v1/models``.

By default a chat request is answered ``"echo: <last user message>"`` and a
JSON-mode request (one carrying ``response_format``) is answered
``{"facts": [], "forget": []}``. Tests script other outcomes through the
``queue_*`` methods (one queued item is used per request, in order) and turn on
quirks of real servers through plain attributes (see `FakeOpenAIServer`).
Requests rejected by a quirk do not use up a queued item. JSON-mode requests
have their own script (`queue_json_reply`, and ``json_mode=True`` on the other
``queue_*`` methods); a request without ``response_format`` -- including a
JSON request that fell back to plain text -- is answered from the chat script.
Embeddings requests have a script of their own too (`queue_embeddings`, and
``embeddings=True`` on `queue_error` and `queue_malformed`).

Every request is recorded in `requests`, rejected ones included, with the
time it arrived (`RecordedRequest.at`, `time.monotonic()`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import math
import re
import struct
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_JSON_REPLY = '{"facts": [], "forget": []}'
DEFAULT_MODELS = ("fake-model", "fake-mini")

# The fake embedding model's "meaning": words that say the same thing share a
# concept, so a paraphrase lands near the original although no word is shared.
CONCEPTS = {
    "car": ("car", "cars", "automobile", "automobiles", "vehicle", "vehicles", "sedan", "汽车", "轿车"),
    "drive": ("drive", "drives", "driving", "commute", "commutes", "commuting", "开车", "通勤"),
    "dog": ("dog", "dogs", "puppy", "canine", "hound", "狗", "小狗"),
    "cat": ("cat", "cats", "kitten", "feline", "猫", "小猫"),
    "pet": ("pet", "pets", "animal", "animals", "宠物"),
    "editor": ("editor", "editors", "ide", "neovim", "vim", "emacs", "编辑器"),
    "database": ("database", "databases", "db", "postgres", "postgresql", "sqlite", "数据库"),
    "deploy": ("deploy", "deploys", "deployment", "release", "releases", "ship", "shipping", "发布", "部署"),
    "weekly": ("weekly", "tuesday", "tuesdays", "week", "每周", "星期二"),
    "home": ("home", "house", "apartment", "flat", "live", "lives", "住", "家"),
    "city": ("city", "town", "berlin", "paris", "shanghai", "城市", "上海"),
}
_CONCEPT_OF = {word: concept for concept, words in CONCEPTS.items() for word in words}
# Longest first, so 小狗 is found before 狗.
_CJK_CONCEPT_WORDS = sorted((w for w in _CONCEPT_OF if not w.isascii()), key=len, reverse=True)
_FAKE_STOPWORDS = frozenset(
    "a an and are as at be do does did for from has have how i in is it my of on or our the to "
    "we what where which who with you your me own use uses used".split()
)
_CJK_CHAR = re.compile(r"[\u3400-\u9fff]")
_CJK_STOP_CHARS = frozenset("的了是在我你他她吗呢吧一个么什怎样有和")
# A Chinese character alone says less than a word: it weighs this much.
_CJK_CHAR_WEIGHT = 0.3


def fake_embedding(text: str, model: str, dimensions: int) -> list[float]:
    """The fake server's vector for `text`: a weighted bag of concepts, unit length.

    Each word (lower-cased; English stopwords dropped) counts as its concept
    when `CONCEPTS` has one and as itself otherwise; Chinese text counts the
    concept words it contains, then its other characters one by one (lightly,
    and not the grammatical ones). Every feature is hashed, with the model's
    name, to one of `dimensions` slots and a sign: different models give
    unrelated vectors, as real ones do.
    """
    features: list[tuple[str, float]] = []
    lowered = text.lower()
    for word in _CJK_CONCEPT_WORDS:
        while word in lowered:
            features.append((_CONCEPT_OF[word], 1.0))
            lowered = lowered.replace(word, " ", 1)
    features += [(char, _CJK_CHAR_WEIGHT) for char in _CJK_CHAR.findall(lowered) if char not in _CJK_STOP_CHARS]
    for word in re.findall(r"[a-z0-9]+", lowered):
        if word not in _FAKE_STOPWORDS:
            features.append((_CONCEPT_OF.get(word, word), 1.0))
    vector = [0.0] * dimensions
    for feature, weight in features:
        digest = hashlib.sha256(f"{model}\0{feature}".encode()).digest()
        slot = int.from_bytes(digest[:4], "big") % dimensions
        vector[slot] += weight if digest[4] & 1 else -weight
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0:  # no features, or they cancelled out: real servers never send zeros
        vector[0], norm = 1.0, 1.0
    return [value / norm for value in vector]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None when there was no (valid JSON) body
    at: float = field(default_factory=time.monotonic)  # when it arrived: to measure retry pauses


@dataclass
class _Answer:
    text: str
    finish_reason: str | None = "stop"
    delay: float = 0.0  # seconds before answering (added to the server's `delay`)
    hold: threading.Event | None = None  # answer only once the test sets it


@dataclass
class _Error:
    status: int
    message: str
    retry_after: str | None = None
    code: str | None = None
    param: str | None = None
    body: Any = None  # sent instead of the OpenAI-style error body when set


@dataclass
class _Cut:
    text: str
    graceful: bool
    after_finish: bool = False


@dataclass
class _Malformed:
    body: str
    content_type: str


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def rough_tokens(text: str) -> int:
    """The tokens the fake reports for `text`: one per 4 characters, rounded up."""
    return (len(text) + 3) // 4


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's
        # algorithm and delayed ACKs add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        try:
            self.server.fake._dispatch(self)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client went away (timeout, Ctrl-C)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-answer is normal here


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 for tests; see the module docstring."""

    # Quirks and pacing: tests set these on the instance; `reset()` restores
    # these class-level defaults.
    reject_json_schema: bool = False  # answer json_schema response_format with...
    json_schema_status: int = 400  # ...this status (400 or 500); json_object is accepted
    reject_response_format: bool = False  # 400 to any response_format
    no_stream_usage: bool = False  # never send a usage chunk, even when asked
    no_usage: bool = False  # report no usage at all: completions, streams and embeddings
    reject_max_completion_tokens: bool = False  # 400 naming it (older compatible servers)
    reject_max_tokens: bool = False  # 400 naming it (OpenAI's reasoning models)
    reject_stream_options: bool = False  # 400 naming it
    reject_unknown_models: bool = False  # 404 model_not_found for a model not in `models`
    require_api_key: str | None = None  # when set, 401 unless "Authorization: Bearer <key>"
    delay: float = 0.0  # seconds before answering a chat request
    stream_delay: float = 0.0  # seconds between two streamed content chunks
    serial: bool = False  # one chat request at a time (llama.cpp with one slot)
    chunk_chars: int = 8  # characters of answer text per streamed chunk
    embedding_dimensions: int = 256  # length of every embedding vector
    _SETTINGS = tuple(__annotations__)  # the names above

    def __init__(self, port: int = 0) -> None:
        self.port = port  # 0: any free port
        self.requests: list[RecordedRequest] = []
        self.models: list[str] = list(DEFAULT_MODELS)
        self._chat_script: deque[Any] = deque()
        self._json_script: deque[Any] = deque()
        self._embeddings_script: deque[Any] = deque()
        self._lock = threading.Lock()
        self._serial_lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", self.port), _Handler)
        self._httpd.fake = self
        port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in `delay`
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget recorded requests and queued items; restore every quirk's default."""
        with self._lock:
            self.requests.clear()
            self._chat_script.clear()
            self._json_script.clear()
            self._embeddings_script.clear()
        self.models = list(DEFAULT_MODELS)
        for name in self._SETTINGS:
            self.__dict__.pop(name, None)

    # -- what was received -----------------------------------------------

    def _completion_bodies(self, json_mode: bool) -> list[Any]:
        with self._lock:
            recorded = list(self.requests)
        return [
            r.body
            for r in recorded
            if r.method == "POST"
            and r.path == "/v1/chat/completions"
            and isinstance(r.body, dict)
            and ("response_format" in r.body) == json_mode
        ]

    @property
    def chat_requests(self) -> list[dict]:
        """Bodies of chat-completion requests without response_format."""
        return self._completion_bodies(json_mode=False)

    @property
    def json_requests(self) -> list[dict]:
        """Bodies of chat-completion requests with response_format (extraction)."""
        return self._completion_bodies(json_mode=True)

    @property
    def embedding_requests(self) -> list[dict]:
        """Bodies of embeddings requests (each with its "input" list)."""
        with self._lock:
            recorded = list(self.requests)
        return [r.body for r in recorded if r.method == "POST" and r.path == "/v1/embeddings"]

    @property
    def embedded_texts(self) -> list[str]:
        """Every text sent for embedding, in order, over all requests."""
        texts: list[str] = []
        for body in self.embedding_requests:
            given = body.get("input") if isinstance(body, dict) else None
            texts += [given] if isinstance(given, str) else list(given or ())
        return texts

    # -- scripting ---------------------------------------------------------

    def queue_answer(self, text: str, finish_reason: str | None = "stop", *, delay: float = 0.0) -> None:
        """The next chat request is answered `text` with `finish_reason`, after
        `delay` seconds (a slow server for one request only)."""
        self._chat_script.append(_Answer(text, finish_reason, delay))

    def queue_json_reply(self, text: str, *, hold: threading.Event | None = None) -> None:
        """The next JSON-mode request is answered with this raw text, once
        `hold` is set when one is given (at most 30 s later)."""
        self._json_script.append(_Answer(text, "stop", hold=hold))

    def queue_error(
        self,
        status: int,
        message: str = "fake failure",
        *,
        retry_after: str | float | None = None,
        code: str | None = None,
        param: str | None = None,
        body: Any = None,
        json_mode: bool = False,
        embeddings: bool = False,
    ) -> None:
        """The next chat request (JSON-mode one with `json_mode`, embeddings
        request with `embeddings`) fails with an OpenAI-style error body (or
        `body`, e.g. FastAPI's {"detail": [...]}) and, with `retry_after`, a
        Retry-After header."""
        retry = None if retry_after is None else str(retry_after)
        self._script(json_mode, embeddings).append(_Error(status, message, retry, code, param, body))

    def queue_embeddings(self, count: int = 1) -> None:
        """The next `count` embeddings requests are answered as usual: to
        script a failure after them."""
        self._embeddings_script.extend(_Answer("") for _ in range(count))

    def queue_cut_stream(
        self, partial: str, *, graceful: bool = False, after_finish: bool = False, json_mode: bool = False
    ) -> None:
        """The next answer sends `partial`, then stops without finish_reason or [DONE].

        By default the connection drops in the middle of the HTTP body (the
        client sees a broken transfer); with `graceful` the HTTP body ends
        properly, as when a proxy ends the stream; with `after_finish` the
        finish_reason "stop" chunk is sent before the drop (only usage and
        [DONE] are lost). A non-streamed request gets a truncated JSON body and
        a dropped connection."""
        self._script(json_mode).append(_Cut(partial, graceful, after_finish))

    def queue_malformed(
        self,
        body: str = '{"choices": [',
        *,
        content_type: str = "application/json",
        json_mode: bool = False,
        embeddings: bool = False,
    ) -> None:
        """The next answer is status 200 with `body`, by default not valid JSON
        (for a stream: one SSE event whose data is `body`)."""
        self._script(json_mode, embeddings).append(_Malformed(body, content_type))

    def _script(self, json_mode: bool, embeddings: bool = False) -> deque[Any]:
        if embeddings:
            return self._embeddings_script
        return self._json_script if json_mode else self._chat_script

    # -- request handling --------------------------------------------------

    def _dispatch(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = h.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self._lock:
            self.requests.append(RecordedRequest(h.command, path, headers, body))

        key = self.require_api_key
        sent = headers.get("authorization", "")
        if key is not None and sent != f"Bearer {key}":
            shown = sent.removeprefix("Bearer ")
            self._send_error(h, _Error(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key"))
        elif h.command == "GET" and path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
            self._send_json(h, 200, {"object": "list", "data": data})
        elif h.command == "POST" and path == "/v1/chat/completions":
            with self._serial_lock if self.serial else contextlib.nullcontext():
                self._chat(h, body)
        elif h.command == "POST" and path == "/v1/embeddings":
            self._embeddings(h, body)
        else:
            self._send_error(h, _Error(404, f"Unknown request URL: {h.command} {path}.", code="unknown_url"))

    def _chat(self, h: _Handler, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_error(h, _Error(400, "The request body must be JSON with a 'messages' list."))
            return
        json_mode = "response_format" in body
        # The item is taken as the request arrives, before any delay: a request
        # its client gave up on must not wake later and take the next test's item.
        item = self._rejection(body) or self._next_item(body, json_mode)
        if self.delay:
            self._stopping.wait(self.delay)
        if isinstance(item, _Answer) and item.delay:
            self._stopping.wait(item.delay)
        if isinstance(item, _Answer) and item.hold is not None:
            item.hold.wait(30)
        stream = bool(body.get("stream"))
        if isinstance(item, _Error):
            self._send_error(h, item)
        elif isinstance(item, _Malformed):
            if stream:
                self._send_raw(h, 200, "text/event-stream", f"data: {item.body}\n\n".encode())
            else:
                self._send_raw(h, 200, item.content_type, item.body.encode())
        elif stream:
            self._stream(h, body, item)
        elif isinstance(item, _Cut):
            full = json.dumps(self._completion(body, _Answer(item.text, None))).encode()
            self._send_head(h, 200, "application/json", len(full))
            h.wfile.write(full[: len(full) // 2])
            h.close_connection = True
        else:
            self._send_json(h, 200, self._completion(body, item))

    def _embeddings(self, h: _Handler, body: Any) -> None:
        given = body.get("input") if isinstance(body, dict) else None
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            self._send_error(h, _Error(400, "'input' must be a non-empty string or list of non-empty strings.",
                                       param="input"))
            return
        model = str(body.get("model", ""))
        item = None
        if self.reject_unknown_models and model not in self.models:
            item = _Error(404, f"The model `{model}` does not exist.", code="model_not_found", param="model")
        if item is None:
            with self._lock:
                item = self._embeddings_script.popleft() if self._embeddings_script else None
        if isinstance(item, _Error):
            self._send_error(h, item)
            return
        if isinstance(item, _Malformed):
            self._send_raw(h, 200, item.content_type, item.body.encode())
            return
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector: Any = fake_embedding(text, model, max(1, int(self.embedding_dimensions)))
            if as_base64:  # what OpenAI sends: little-endian float32
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        out: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if not self.no_usage:
            used = sum(rough_tokens(text) for text in texts)
            out["usage"] = {"prompt_tokens": used, "total_tokens": used}
        self._send_json(h, 200, out)

    def _rejection(self, body: dict) -> _Error | None:
        fmt = body.get("response_format")
        if fmt is not None and self.reject_response_format:
            return _Error(400, "Unsupported parameter: response_format is not supported.", param="response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and self.reject_json_schema:
            return _Error(
                self.json_schema_status,
                "Unsupported value: response_format type 'json_schema' is not supported.",
                param="response_format",
            )
        for flag, name in (
            ("reject_max_completion_tokens", "max_completion_tokens"),
            ("reject_max_tokens", "max_tokens"),
            ("reject_stream_options", "stream_options"),
        ):
            if getattr(self, flag) and name in body:
                return _Error(400, f"Unrecognized request argument supplied: {name}", param=name)
        model = body.get("model")
        if self.reject_unknown_models and model not in self.models:
            return _Error(404, f"The model `{model}` does not exist.", code="model_not_found", param="model")
        return None

    def _next_item(self, body: dict, json_mode: bool) -> Any:
        with self._lock:
            script = self._script(json_mode)
            if script:
                return script.popleft()
        if json_mode:
            return _Answer(DEFAULT_JSON_REPLY)
        last_user = next(
            (_content_text(m.get("content")) for m in reversed(body["messages"]) if m.get("role") == "user"),
            "",
        )
        return _Answer(f"echo: {last_user}")

    # -- response bodies ---------------------------------------------------

    def _usage(self, body: dict, text: str) -> dict:
        prompt = sum(rough_tokens(_content_text(m.get("content"))) for m in body["messages"] if isinstance(m, dict))
        completion = rough_tokens(text)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _envelope(self, body: dict, obj: str, choices: list) -> dict:
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": obj,
            "created": int(time.time()),
            "model": str(body.get("model", "")),
            "choices": choices,
        }

    def _completion(self, body: dict, answer: _Answer) -> dict:
        message = {"role": "assistant", "content": answer.text}
        out = self._envelope(
            body, "chat.completion", [{"index": 0, "message": message, "finish_reason": answer.finish_reason}]
        )
        if not self.no_usage:
            out["usage"] = self._usage(body, answer.text)
        return out

    def _stream(self, h: _Handler, body: dict, item: _Answer | _Cut) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def event(data: Any) -> None:
            payload = f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))

        def chunk(delta: dict, finish_reason: str | None = None) -> dict:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return self._envelope(body, "chat.completion.chunk", [choice])

        event(chunk({"role": "assistant", "content": ""}))
        size = max(1, int(self.chunk_chars))
        for start in range(0, len(item.text), size):
            if start and self.stream_delay:
                self._stopping.wait(self.stream_delay)
            event(chunk({"content": item.text[start : start + size]}))
        if isinstance(item, _Cut):
            if item.after_finish:
                event(chunk({}, "stop"))
            if item.graceful:
                h.wfile.write(b"0\r\n\r\n")
            h.close_connection = True
            return
        event(chunk({}, item.finish_reason))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") and not (self.no_stream_usage or self.no_usage):
            usage_chunk = self._envelope(body, "chat.completion.chunk", [])
            usage_chunk["usage"] = self._usage(body, item.text)
            event(usage_chunk)
        event("[DONE]")
        h.wfile.write(b"0\r\n\r\n")

    # -- low-level sending -------------------------------------------------

    @staticmethod
    def _send_head(h: _Handler, status: int, content_type: str, length: int, extra: dict | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(length))
        for name, value in (extra or {}).items():
            h.send_header(name, value)
        h.end_headers()

    def _send_raw(self, h: _Handler, status: int, content_type: str, data: bytes, extra: dict | None = None) -> None:
        self._send_head(h, status, content_type, len(data), extra)
        h.wfile.write(data)

    def _send_json(self, h: _Handler, status: int, obj: Any, extra: dict | None = None) -> None:
        self._send_raw(h, status, "application/json", json.dumps(obj).encode(), extra)

    def _send_error(self, h: _Handler, err: _Error) -> None:
        body = err.body
        if body is None:
            error = {"message": err.message, "type": _ERROR_TYPES.get(err.status, "server_error")}
            body = {"error": {**error, "param": err.param, "code": err.code}}
        extra = {"Retry-After": err.retry_after} if err.retry_after is not None else None
        self._send_json(h, err.status, body, extra)

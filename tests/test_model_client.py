"""kvchat.model_client through the real openai client, over HTTP, against FakeOpenAIServer."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from fake_openai import DEFAULT_JSON_REPLY, FakeOpenAIServer, rough_tokens

from kvchat.model_client import Embeddings, ModelClient, ModelError, Reply, is_openai_url

KEY = "sk-test-0123456789abcdef"
USER = [{"role": "user", "content": "hello there"}]
SCHEMA = {"type": "object", "properties": {"facts": {"type": "array"}}, "required": ["facts"]}


@pytest.fixture(scope="module")
def running_server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def server(running_server):
    running_server.reset()
    yield running_server
    running_server.reset()


@pytest.fixture
def make_client(server):
    clients = []

    def make(**options) -> ModelClient:
        options = {"api_key": KEY, "base_url": server.base_url, "max_retries": 0, "timeout": 5.0, **options}
        client = ModelClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client) -> ModelClient:
    return make_client()


def chat_collecting(client: ModelClient, **kwargs) -> tuple[Reply, list[str]]:
    pieces: list[str] = []
    reply = client.chat(USER, model="fake-model", on_text=pieces.append, **kwargs)
    return reply, pieces


def expect_error(kind: str, call, *args, **kwargs) -> ModelError:
    with pytest.raises(ModelError) as info:
        call(*args, **kwargs)
    err = info.value
    assert err.kind == kind, str(err)
    assert "\n" not in str(err) and KEY not in str(err)
    return err


# -- the module itself -----------------------------------------------------


def test_importing_the_module_does_not_import_openai():
    code = "import sys, kvchat.model_client; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_empty_api_key_is_an_auth_error():
    with pytest.raises(ModelError) as info:
        ModelClient(api_key="", base_url="http://127.0.0.1:9/v1")
    assert info.value.kind == "auth"
    assert "OPENAI_API_KEY" in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.openai.com/v1", True),
        ("https://API.OpenAI.com/v1/", True),
        ("https://eu.api.openai.com/v1", True),
        ("http://127.0.0.1:11434/v1", False),
        ("https://api.deepseek.com", False),
        ("https://api.openai.com.evil.example/v1", False),
    ],
)
def test_is_openai_url(url, expected):
    assert is_openai_url(url) is expected


def test_the_default_base_url_is_openai_or_the_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert ModelClient(api_key=KEY).base_url == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1/")
    assert ModelClient(api_key=KEY).base_url == "http://127.0.0.1:8080/v1"


# -- chat ------------------------------------------------------------------


def test_streamed_chat_passes_pieces_to_on_text_and_reports_usage(server, client):
    reply, pieces = chat_collecting(client)
    assert reply.text == "echo: hello there"
    assert len(pieces) > 1 and "".join(pieces) == reply.text
    assert reply.finish_reason == "stop" and not reply.interrupted and reply.error is None
    assert reply.prompt_tokens and reply.prompt_tokens > 0
    assert reply.completion_tokens and reply.completion_tokens > 0
    assert reply.model == "fake-model"
    (body,) = server.chat_requests
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == USER
    assert "max_tokens" not in body and "max_completion_tokens" not in body
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_non_streamed_chat_calls_on_text_once(server, client):
    server.queue_answer("the whole answer")
    reply, pieces = chat_collecting(client, stream=False)
    assert pieces == ["the whole answer"]
    assert reply == Reply("the whole answer", "stop", reply.prompt_tokens, reply.completion_tokens, "fake-model")
    assert reply.prompt_tokens and reply.completion_tokens
    assert not server.chat_requests[0].get("stream")
    assert "stream_options" not in server.chat_requests[0]


def test_chinese_text_streams_intact(server, client):
    server.chunk_chars = 3
    server.queue_answer("你好，世界！这是一个测试。")
    reply, pieces = chat_collecting(client)
    assert reply.text == "你好，世界！这是一个测试。"
    assert len(pieces) == 5


@pytest.mark.parametrize("stream", [True, False])
def test_finish_reason_length_is_reported(server, client, stream):
    server.queue_answer("cut short", finish_reason="length")
    reply, _ = chat_collecting(client, stream=stream)
    assert (reply.text, reply.finish_reason) == ("cut short", "length")


def test_a_stream_whose_connection_drops_returns_the_partial_text(server, client):
    server.queue_cut_stream("partial answer so far")
    reply, pieces = chat_collecting(client)
    assert reply.text == "partial answer so far" == "".join(pieces)
    assert reply.finish_reason is None and reply.interrupted
    assert reply.error is not None and reply.error.kind == "connection"
    assert "broke off" in str(reply.error)
    # The client is still usable afterwards.
    assert chat_collecting(client)[0].text == "echo: hello there"


def test_a_stream_that_ends_without_finish_reason_returns_the_partial_text(server, client):
    server.queue_cut_stream("partial", graceful=True)
    reply, pieces = chat_collecting(client)
    assert (reply.text, reply.finish_reason, reply.error) == ("partial", None, None)
    assert pieces == ["partial"]


def test_a_stream_that_drops_after_finish_reason_is_a_complete_answer(server, client):
    server.queue_cut_stream("all of it", after_finish=True)
    reply, _ = chat_collecting(client)
    assert (reply.text, reply.finish_reason, reply.error) == ("all of it", "stop", None)
    assert reply.prompt_tokens is None


def test_a_stream_that_drops_before_any_text_is_a_connection_error(server, client):
    server.queue_cut_stream("")
    expect_error("connection", chat_collecting, client)


def test_a_non_streamed_answer_cut_off_is_a_connection_error(server, client):
    server.queue_cut_stream("half of an answer")
    expect_error("connection", chat_collecting, client, stream=False)


def test_keyboard_interrupt_propagates_and_the_caller_keeps_what_it_got(server, client):
    server.queue_answer("a long answer that the user interrupts")
    received: list[str] = []

    def on_text(piece: str) -> None:
        received.append(piece)
        if len(received) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.chat(USER, model="fake-model", on_text=on_text)
    assert "".join(received) == "a long answer that the user interrupts"[:16]
    assert chat_collecting(client)[0].text == "echo: hello there"


def test_an_error_event_in_the_stream_is_a_server_error(server, client):
    server.queue_malformed('{"error": {"message": "the model crashed"}}')
    err = expect_error("server", chat_collecting, client)
    assert "the model crashed" in str(err)


# -- the answer-length parameter -------------------------------------------


def test_max_tokens_goes_to_servers_other_than_openai(server, client):
    chat_collecting(client, max_tokens=50)
    (body,) = server.chat_requests
    assert body["max_tokens"] == 50 and "max_completion_tokens" not in body


def test_a_server_refusing_max_tokens_gets_max_completion_tokens_and_the_reverse(server, client):
    server.reject_max_tokens = True  # like OpenAI's reasoning models
    assert chat_collecting(client, max_tokens=50)[0].text == "echo: hello there"
    first, second = server.chat_requests
    assert first["max_tokens"] == 50 and "max_completion_tokens" not in first
    assert second["max_completion_tokens"] == 50 and "max_tokens" not in second

    # Remembered: the next call goes straight to max_completion_tokens.
    chat_collecting(client, max_tokens=60)
    assert server.chat_requests[2]["max_completion_tokens"] == 60
    assert len(server.requests) == 3

    # An older server refusing max_completion_tokens gets max_tokens back.
    server.reject_max_tokens = False
    server.reject_max_completion_tokens = True
    assert chat_collecting(client, max_tokens=70)[0].finish_reason == "stop"
    assert server.chat_requests[3]["max_completion_tokens"] == 70
    assert server.chat_requests[4]["max_tokens"] == 70
    assert len(server.requests) == 5


def test_a_server_refusing_both_limits_is_a_bad_request(server, client):
    server.reject_max_tokens = server.reject_max_completion_tokens = True
    err = expect_error("bad_request", chat_collecting, client, max_tokens=50)
    assert err.status == 400 and "max_completion_tokens" in str(err)
    assert len(server.requests) == 2


def test_a_limit_that_is_too_large_is_not_mistaken_for_an_unknown_parameter(server, client):
    server.queue_error(400, "max_tokens is too large: 100000. This model supports at most 4096.", param="max_tokens")
    err = expect_error("bad_request", chat_collecting, client, max_tokens=100000)
    assert "too large" in str(err)
    assert len(server.requests) == 1


def test_stream_options_refused_is_retried_without_it_and_remembered(server, client):
    server.reject_stream_options = True
    reply, _ = chat_collecting(client, max_tokens=40)
    assert reply.text == "echo: hello there" and reply.finish_reason == "stop"
    assert reply.prompt_tokens is None and reply.completion_tokens is None
    first, second = server.chat_requests
    assert "stream_options" in first and "stream_options" not in second
    assert second["max_tokens"] == 40
    chat_collecting(client)
    assert "stream_options" not in server.chat_requests[2]
    assert len(server.requests) == 3


def test_a_fastapi_style_422_naming_stream_options_is_understood(server, client):
    detail = [{"type": "extra_forbidden", "loc": ["body", "stream_options"], "msg": "Extra inputs are not permitted"}]
    server.queue_error(422, body={"detail": detail})
    assert chat_collecting(client)[0].text == "echo: hello there"
    assert ["stream_options" in body for body in server.chat_requests] == [True, False]


def test_stream_options_and_the_limit_both_refused(server, client):
    server.reject_stream_options = server.reject_max_tokens = True
    assert chat_collecting(client, max_tokens=40)[0].finish_reason == "stop"
    assert len(server.requests) == 3
    last = server.chat_requests[-1]
    assert "stream_options" not in last and last["max_completion_tokens"] == 40


def test_a_server_that_never_reports_stream_usage(server, client):
    server.no_stream_usage = True
    reply, _ = chat_collecting(client)
    assert reply.text == "echo: hello there" and reply.finish_reason == "stop"
    assert (reply.prompt_tokens, reply.completion_tokens) == (None, None)
    assert server.chat_requests[0]["stream_options"] == {"include_usage": True}


# -- complete_json -----------------------------------------------------------


def complete_json(client: ModelClient, **kwargs) -> Reply:
    return client.complete_json(USER, model="fake-model", schema=SCHEMA, schema_name="memory_update", **kwargs)


def format_types(server: FakeOpenAIServer) -> list[str]:
    return [body["response_format"]["type"] for body in server.json_requests]


def test_complete_json_asks_for_the_strict_schema(server, client):
    assert complete_json(client, max_tokens=300).text == DEFAULT_JSON_REPLY
    (body,) = server.json_requests
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "memory_update", "schema": SCHEMA, "strict": True},
    }
    assert body["max_tokens"] == 300
    assert not body.get("stream")
    assert server.chat_requests == []


def test_complete_json_returns_the_servers_usage_with_the_answer(server, client):
    reply = complete_json(client)
    sent = sum(rough_tokens(message["content"]) for message in USER)
    assert (reply.finish_reason, reply.model) == ("stop", "fake-model")
    assert (reply.prompt_tokens, reply.completion_tokens) == (sent, rough_tokens(DEFAULT_JSON_REPLY))
    server.no_usage = True
    reply = complete_json(client)
    assert reply.text == DEFAULT_JSON_REPLY and (reply.prompt_tokens, reply.completion_tokens) == (None, None)


def test_complete_json_returns_the_raw_text_even_when_it_is_not_json(server, client):
    server.queue_json_reply('Sure! Here it is: {"facts": [')
    assert complete_json(client).text == 'Sure! Here it is: {"facts": ['


@pytest.mark.parametrize("status", [400, 500])
def test_json_schema_refused_falls_back_to_json_object_and_remembers(server, make_client, status):
    client = make_client(max_retries=2)  # probing must not retry the refusal
    server.reject_json_schema = True
    server.json_schema_status = status
    server.queue_json_reply('{"facts": ["a"]}')
    assert complete_json(client).text == '{"facts": ["a"]}'
    assert format_types(server) == ["json_schema", "json_object"]
    assert complete_json(client).text == DEFAULT_JSON_REPLY
    assert format_types(server) == ["json_schema", "json_object", "json_object"]


def test_any_response_format_refused_falls_back_to_plain_text(server, client):
    server.reject_response_format = True
    server.queue_answer('{"facts": []}')  # a plain request is answered from the chat script
    assert complete_json(client).text == '{"facts": []}'
    assert format_types(server) == ["json_schema", "json_object"]
    (plain,) = server.chat_requests
    assert plain["messages"] == USER and not plain.get("stream")
    complete_json(client)
    assert len(server.json_requests) == 2 and len(server.chat_requests) == 2


def test_a_failure_after_the_format_is_known_to_work_is_not_a_fallback(server, client):
    complete_json(client)
    server.queue_error(400, "context length exceeded", json_mode=True)
    err = expect_error("bad_request", complete_json, client)
    assert "context length exceeded" in str(err)
    assert format_types(server) == ["json_schema", "json_schema"]


def test_a_server_refusing_every_level_reports_the_last_refusal(server, client):
    server.reject_response_format = True
    server.queue_error(400, "no JSON for you")
    err = expect_error("bad_request", complete_json, client)
    assert "no JSON for you" in str(err)
    assert format_types(server) == ["json_schema", "json_object"] and len(server.chat_requests) == 1


def test_complete_json_maps_errors_too(server, client):
    server.queue_error(401, "bad key", json_mode=True)
    expect_error("auth", complete_json, client)
    assert len(server.requests) == 1


# -- errors ------------------------------------------------------------------


def test_a_rejected_api_key_never_appears_in_the_error(server, make_client):
    server.require_api_key = "sk-the-right-key-000000"
    err = expect_error("auth", chat_collecting, make_client())
    assert str(err).startswith("the server rejected the API key (check OPENAI_API_KEY")
    assert err.status == 401
    assert err.__cause__ is None  # the server's text quotes the key; keep it out of tracebacks


def test_permission_denied_is_an_auth_error(server, client):
    server.queue_error(403, f"key {KEY} may not use this model")
    err = expect_error("auth", chat_collecting, client)
    assert "403" in str(err)


def test_an_unknown_model_names_the_model_and_the_server(server, client):
    server.reject_unknown_models = True
    err = expect_error("not_found", client.chat, USER, model="no-such-model")
    assert "no-such-model" in str(err) and server.base_url in str(err)


def test_a_base_url_without_v1_is_not_found(server, make_client):
    client = make_client(base_url=server.base_url.removesuffix("/v1"))
    err = expect_error("not_found", chat_collecting, client)
    assert "/v1" in str(err)


def test_an_unreachable_server_is_a_connection_error():
    with FakeOpenAIServer() as gone:
        url = gone.base_url
    client = ModelClient(api_key=KEY, base_url=url, max_retries=0)
    err = expect_error("connection", chat_collecting, client)
    assert str(err).startswith(f"cannot reach the model server at {url}")
    assert "refused" in str(err).lower()


def test_a_slow_server_is_a_timeout(server, make_client):
    import openai  # noqa: F401  (before the clock starts: a first import takes seconds on a slow machine)

    server.delay = 2.0
    started = time.monotonic()
    err = expect_error("timeout", chat_collecting, make_client(timeout=0.3))
    assert time.monotonic() - started < 1.5
    assert server.base_url in str(err)


@pytest.mark.parametrize(
    ("status", "message", "kind", "shown"),
    [
        (429, "Rate limit reached for requests", "rate_limit", "is rate-limiting requests (HTTP 429)"),
        (500, "internal error", "server", "failed (HTTP 500)"),
    ],
)
def test_rate_limits_and_server_errors_are_reported_after_the_clients_own_retries(
    server, make_client, status, message, kind, shown
):
    for _ in range(2):
        server.queue_error(status, message, retry_after="0.01")
    err = expect_error(kind, chat_collecting, make_client(max_retries=1))
    assert shown in str(err) and message in str(err) and err.status == status
    assert len(server.requests) == 2


def test_a_retried_429_can_succeed(server, make_client):
    server.queue_error(429, "slow down", retry_after="0.01")
    assert chat_collecting(make_client(max_retries=1))[0].text == "echo: hello there"
    assert len(server.requests) == 2


def test_a_timeout_is_not_retried(server, make_client):
    """The timeout is the longest the user waits, not a third of it."""
    server.delay = 1.0
    expect_error("timeout", chat_collecting, make_client(timeout=0.3, max_retries=2))
    assert len(server.requests) == 1


def test_retry_after_as_an_http_date_is_honoured(server, make_client):
    from email.utils import formatdate

    server.queue_error(503, "restarting", retry_after=formatdate(time.time() + 2, usegmt=True))
    assert chat_collecting(make_client(max_retries=1))[0].text == "echo: hello there"
    first, second = (r.at for r in server.requests)
    assert 0.9 <= second - first < 3  # the date has whole seconds


def test_embed_is_retried_like_chat(server, make_client):
    server.queue_error(503, "loading the model", retry_after="0.01", embeddings=True)
    assert len(make_client(max_retries=1).embed(["hello"], model="fake-embed").vectors) == 1
    assert len(server.embedding_requests) == 2


def test_exhausted_quota_says_so(server, client):
    server.queue_error(429, "You exceeded your current quota", code="insufficient_quota")
    err = expect_error("rate_limit", chat_collecting, client)
    assert "no quota left" in str(err)


def test_a_bad_request_carries_the_servers_explanation_redacted(server, client):
    server.queue_error(400, f"messages must not be empty\n(request by {KEY}, also sk-other-secret-999)")
    err = expect_error("bad_request", chat_collecting, client)
    assert "messages must not be empty" in str(err)
    assert "sk-other-secret-999" not in str(err)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"choices": [', "application/json"),  # not JSON
        ("<html>Bad gateway</html>", "text/html"),  # not JSON, and says so
        ('{"foo": 1}', "application/json"),  # JSON, but no choices
    ],
)
def test_a_malformed_response_is_a_bad_response(server, client, body, content_type):
    server.queue_malformed(body, content_type=content_type)
    err = expect_error("bad_response", chat_collecting, client, stream=False)
    assert server.base_url in str(err)


def test_a_malformed_stream_is_a_bad_response(server, client):
    server.queue_malformed('{"choices": [')
    expect_error("bad_response", chat_collecting, client)


# -- embeddings ----------------------------------------------------------------


def test_embed_returns_one_unit_vector_per_text_in_order(server, client):
    texts = ["drives an old automobile", "what car do I own?", "a cat called Tom", "每天开车去公司"]
    vectors = client.embed(texts, model="fake-embed").vectors
    assert len(vectors) == 4 and {len(v) for v in vectors} == {server.embedding_dimensions}
    assert all(abs(sum(x * x for x in v) - 1) < 1e-6 for v in vectors)
    assert client.embed(texts[1:2], model="fake-embed").vectors == vectors[1:2]  # deterministic
    [body, _] = server.embedding_requests
    # Plain floats: not every imitation of OpenAI decodes the client's default base64.
    assert body == {"model": "fake-embed", "input": texts, "encoding_format": "float"}


def test_embed_sends_at_most_64_texts_a_request(server, client):
    texts = [f"note number {n}" for n in range(130)]
    embeddings = client.embed(texts, model="fake-embed")
    assert [len(body["input"]) for body in server.embedding_requests] == [64, 64, 2]
    assert server.embedded_texts == texts
    assert embeddings.vectors[129] == client.embed(["note number 129"], model="fake-embed").vectors[0]
    # The usage of the three requests, summed.
    assert embeddings.prompt_tokens == sum(rough_tokens(text) for text in texts)


def test_embed_without_reported_usage_says_so(server, client):
    server.no_usage = True
    embeddings = client.embed(["hello", "world"], model="fake-embed")
    assert len(embeddings.vectors) == 2 and embeddings.prompt_tokens is None


def test_embed_of_nothing_sends_nothing(server, client):
    assert client.embed([], model="fake-embed") == Embeddings([], 0)
    assert server.requests == []


@pytest.mark.parametrize(
    ("status", "kind", "shown"),
    [(500, "server", "failed (HTTP 500)"), (501, "server", "start it with --embeddings"),
     (400, "bad_request", "input is too large"), (429, "rate_limit", "HTTP 429")],
)
def test_embed_maps_failures_like_chat(server, client, status, kind, shown):
    message = {501: "This server does not support embeddings. Start it with --embeddings",
               400: "input is too large to process"}.get(status, "fake failure")
    server.queue_error(status, message, embeddings=True)
    err = expect_error(kind, client.embed, ["hello"], model="fake-embed")
    assert shown.lower() in str(err).lower() and err.status == status
    assert client.chat(USER, model="fake-model", stream=False).text == "echo: hello there"  # not the chat script


def test_embed_with_an_unknown_model_names_it(server, client):
    server.reject_unknown_models = True
    err = expect_error("not_found", client.embed, ["hello"], model="no-such-embedder")
    assert "'no-such-embedder'" in str(err) and server.base_url in str(err)


def test_embed_with_a_rejected_key_never_shows_it(server, make_client):
    server.require_api_key = "the-right-key"
    err = expect_error("auth", make_client().embed, ["hello"], model="fake-embed")
    assert err.__cause__ is None


def test_embed_from_an_unreachable_server_is_a_connection_error():
    with FakeOpenAIServer() as gone:
        url = gone.base_url
    err = expect_error("connection", ModelClient(api_key=KEY, base_url=url, max_retries=0).embed,
                       ["hello"], model="fake-embed")
    assert url in str(err)


@pytest.mark.parametrize(
    "body",
    [
        '{"data": [',  # not JSON
        '{"object": "list"}',  # no data
        '{"data": [{"index": 0, "embedding": [0.6, 0.8]}]}',  # one vector for two texts
        '{"data": [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 1, "embedding": [1.0]}]}',  # two lengths
        '{"data": [{"index": 0, "embedding": []}, {"index": 1, "embedding": []}]}',  # empty
        '{"data": [{"index": 0, "embedding": "AACAPw=="}, {"index": 1, "embedding": "AACAPw=="}]}',  # base64
        '{"data": [{"index": 0, "embedding": [1, "x"]}, {"index": 1, "embedding": [1, 2]}]}',  # text
        '{"data": [{"index": 0, "embedding": [NaN, 1]}, {"index": 1, "embedding": [1, 2]}]}',  # not a number
    ],
)
def test_a_malformed_embeddings_response_is_a_bad_response(server, client, body):
    server.queue_malformed(body, embeddings=True)
    expect_error("bad_response", client.embed, ["one", "two"], model="fake-embed")


def test_embed_puts_vectors_in_the_order_of_their_index(server, client):
    server.queue_malformed(
        '{"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]}', embeddings=True
    )
    assert client.embed(["first", "second"], model="fake-embed").vectors == [[1.0, 0.0], [0.0, 1.0]]


def test_the_fake_embeddings_make_paraphrases_close_and_answer_base64_too(server):
    import openai
    from fake_openai import fake_embedding

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b))

    car, auto, cat = (fake_embedding(t, "m", 256) for t in ("what car do I own?", "an old automobile", "a cat"))
    assert cosine(car, auto) > 0.6 and abs(cosine(car, cat)) < 0.1
    assert cosine(car, fake_embedding("what car do I own?", "other-model", 256)) < 0.5
    raw = openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0).embeddings.create(
        model="m", input="an old automobile"
    )  # the client asks for base64 and decodes it
    assert [round(x, 5) for x in raw.data[0].embedding] == [round(x, 5) for x in auto]


# -- the fake server's own knobs --------------------------------------------


def test_the_serial_server_handles_one_request_at_a_time(server, make_client):
    server.serial = True
    server.delay = 0.15
    clients = [make_client(), make_client()]
    started = time.monotonic()
    threads = [threading.Thread(target=chat_collecting, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= 0.3
    assert len(server.chat_requests) == 2


def test_the_fake_lists_models_and_resets(server):
    import openai

    listing = openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0).models.list()
    assert [m.id for m in listing] == ["fake-model", "fake-mini"]
    server.reject_json_schema = True
    server.queue_answer("never used")
    server.reset()
    assert server.requests == [] and server.reject_json_schema is False

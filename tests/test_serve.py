"""The serving API end to end: a tiny Llama behind Ray Serve, called with `openai`.

One Serve deployment is shared by the module (starting it dominates the run time). The
model is random, so tests compare the server with itself (stream vs. non-stream, seeded
runs) and with the tokenizer's own counts, never with expected words.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from openai import OpenAI

from conftest import free_port, tiny_llama

MODEL_NAME = "tiny"
ERROR_KEYS = {"message", "type", "param", "code"}
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER_HI: list[Any] = [{"role": "user", "content": "hi"}]

SUBJECTS = ["the cat", "a dog", "my friend", "the robot", "our teacher", "a small bird"]
VERBS = ["eats", "sees", "likes", "builds", "reads", "finds", "paints", "carries"]
OBJECTS = ["an apple", "the book", "a red ball", "some bread", "the old house", "a star"]


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(n)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Llama with a freshly trained byte-level BPE tokenizer."""
    path = tiny_llama(
        tmp_path_factory.mktemp("tiny-llama"), _sentences(400), vocab_size=320, seed=0
    )
    assert (path / "model.safetensors").exists()
    return path


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def base_url(model_dir: Path) -> Iterator[str]:
    """An in-process Ray cluster with one Serve application on a free loopback port."""
    import ray
    from ray import serve

    from lmforge.serve import build_app

    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app(str(model_dir), served_model_name=MODEL_NAME, default_max_tokens=16)
        serve.run(app, name="lmforge-serve-test", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    # No retries: a 5xx must fail the test at once instead of being retried.
    return OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)


# ---- happy paths -----------------------------------------------------------------------


def test_models_list(client: OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert models.data[0].object == "model"
    assert models.data[0].owned_by == "lmforge"


def test_health(base_url: str) -> None:
    assert requests.get(f"{base_url}/health", timeout=30).json()["status"] == "ok"


def test_completion_counts_real_tokens(client: OpenAI, tokenizer: Any) -> None:
    prompt = "the robot reads"
    out = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=12, seed=1)
    assert out.object == "text_completion"
    assert out.id.startswith("cmpl-")
    assert out.choices[0].text
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage is not None
    assert out.usage.prompt_tokens == len(tokenizer(prompt).input_ids)
    assert 1 <= out.usage.completion_tokens <= 12
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_chat_counts_chat_template_tokens(client: OpenAI, tokenizer: Any) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What does the cat eat?"},
    ]
    out = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_completion_tokens=8, temperature=0
    )
    assert out.object == "chat.completion"
    assert out.id.startswith("chatcmpl-")
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert out.usage is not None
    assert out.usage.prompt_tokens == len(expected)
    assert 1 <= out.usage.completion_tokens <= 8


def test_chat_content_parts_equal_plain_text(client: OpenAI) -> None:
    def ask(content: Any) -> Any:
        return client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": content}],
            max_tokens=6,
            temperature=0,
        )

    plain = ask("a dog finds the book")
    parts = ask([{"type": "text", "text": "a dog finds the book"}])
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage == plain.usage


def test_streamed_chat_equals_greedy_chat(client: OpenAI) -> None:
    request: dict[str, Any] = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Tell me about the old house."}],
        "max_tokens": 24,
        "temperature": 0,
        "seed": 7,
    }
    whole = client.chat.completions.create(**request)
    chunks = list(
        client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == []  # the usage chunk comes last, without choices
    assert chunks[-1].usage == whole.usage


def test_streamed_completion_equals_seeded_completion(client: OpenAI) -> None:
    request: dict[str, Any] = {
        "model": MODEL_NAME,
        "prompt": "our teacher paints",
        "max_tokens": 20,
        "temperature": 0.9,
        "top_p": 0.9,
        "seed": 1234,
    }
    whole = client.completions.create(**request)
    assert client.completions.create(**request).choices[0].text == whole.choices[0].text
    chunks = list(client.completions.create(**request, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert all(c.usage is None for c in chunks)  # no usage chunk unless asked for
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


@pytest.mark.parametrize("endpoint", [COMPLETIONS, CHAT])
def test_streamed_usage_counts_the_generated_tokens(
    client: OpenAI, engine: Any, tokenizer: Any, endpoint: str
) -> None:
    """With `stream_options.include_usage`, only the last chunk carries usage, and it has
    no choices: prompt tokens as the tokenizer counts them, completion tokens as many as
    were generated (counted by the same greedy generation run in this process), and their
    sum. A stop string ends the answer early, so the count differs from `max_tokens` and
    from the number of text chunks (the stop string's tokens count, its text is not sent).
    """
    max_tokens = 24
    if endpoint == COMPLETIONS:
        prompt = "the robot builds"
        prompt_ids = tokenizer(prompt).input_ids
    else:
        messages: list[Any] = [{"role": "user", "content": "What does my friend carry?"}]
        prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)[
            "input_ids"
        ]
    # A stop string that starts where one of the free answer's deltas starts: the delta
    # that completes it carries tokens but no text, so tokens and text chunks differ.
    free = _deltas(engine, prompt_ids, max_tokens=max_tokens, temperature=0)
    for stop in (d.text[:3] for d in free[2:] if len(d.text) >= 3):
        deltas = _deltas(engine, prompt_ids, max_tokens=max_tokens, temperature=0, stop=[stop])
        if deltas[-1].finish_reason == "stop" and not deltas[-1].text and deltas[-1].token_ids:
            break
    else:
        pytest.fail(f"no stop string ends {free} on a delta without text")
    generated = sum(len(d.token_ids) for d in deltas)
    request: dict[str, Any] = {
        "model": MODEL_NAME,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stop": [stop],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if endpoint == COMPLETIONS:
        chunks = list(client.completions.create(prompt=prompt, **request))
        pieces = [c.choices[0].text for c in chunks[:-1]]
    else:
        chunks = list(client.chat.completions.create(messages=messages, **request))
        pieces = [c.choices[0].delta.content or "" for c in chunks[:-1]]
    *body, last = chunks
    assert body and all(c.choices for c in body)
    assert [c.usage for c in body] == [None] * len(body)
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == len(prompt_ids)
    assert last.usage.completion_tokens == generated
    assert last.usage.total_tokens == len(prompt_ids) + generated
    assert "".join(pieces) == "".join(d.text for d in deltas)
    # the case tells tokens from text chunks and from the requested limit
    assert len([p for p in pieces if p]) < generated < max_tokens


def test_stop_string_ends_generation_and_is_not_returned(client: OpenAI) -> None:
    request: dict[str, Any] = {"model": MODEL_NAME, "prompt": "a small bird", "temperature": 0}
    free = client.completions.create(**request, max_tokens=24).choices[0].text
    assert len(free) >= 4, "the greedy completion is too short to pick a stop string from"
    stop = free[2:4]
    cut = client.completions.create(**request, max_tokens=24, stop=[stop]).choices[0]
    assert cut.text == free[: free.index(stop)]
    assert cut.finish_reason == "stop"


# ---- errors ----------------------------------------------------------------------------


def test_unknown_model_is_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="gpt-missing", prompt="hi", max_tokens=2)
    err = info.value
    assert err.status_code == 404
    assert isinstance(err.body, dict) and set(err.body) == ERROR_KEYS
    assert err.type == "invalid_request_error"
    assert err.code == "model_not_found"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_zero_max_tokens_is_bad_request(client: OpenAI, field: str) -> None:
    request: dict[str, Any] = {"model": MODEL_NAME, "messages": USER_HI, field: 0}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**request)
    assert info.value.param == field
    assert info.value.type == "invalid_request_error"


def test_completion_max_tokens_zero_names_the_param(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=0)
    assert info.value.param == "max_tokens"


def test_context_overflow_is_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=10_000)
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "max_tokens"


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        (CHAT, {"model": MODEL_NAME}, 400, "messages"),
        (CHAT, {"model": MODEL_NAME, "messages": "hi"}, 400, "messages"),
        (CHAT, {"model": MODEL_NAME, "messages": [{"role": "robot", "content": "x"}]}, 400,
         "messages[0].role"),
        (CHAT, {"model": MODEL_NAME, "messages": USER_HI, "n": 0}, 400, "n"),
        (CHAT, {"model": MODEL_NAME, "messages": USER_HI, "n": 17}, 400, "n"),
        (CHAT, {"model": MODEL_NAME, "messages": USER_HI, "top_logprobs": 2}, 400,
         "top_logprobs"),
        (CHAT, {"model": MODEL_NAME, "messages": USER_HI, "logprobs": True,
                "top_logprobs": 21}, 400, "top_logprobs"),
        (COMPLETIONS, {"model": MODEL_NAME, "prompt": "hi", "logprobs": -1}, 400, "logprobs"),
        (COMPLETIONS, {"model": MODEL_NAME, "prompt": "hi", "top_p": 0}, 400, "top_p"),
        (CHAT, {"model": MODEL_NAME, "messages": USER_HI, "temperature": "hot"}, 400,
         "temperature"),
        (COMPLETIONS, {"model": MODEL_NAME, "prompt": "hi", "echo": True}, 400, "echo"),
        (COMPLETIONS, {"model": MODEL_NAME, "prompt": ["a", "b"]}, 400, "prompt"),
        (COMPLETIONS, {"model": MODEL_NAME, "prompt": "hi", "stop": ["a"] * 5}, 400, "stop"),
        ("/v1/embeddings", {"model": MODEL_NAME, "input": "hi"}, 404, None),
    ],
)  # fmt: skip
def test_raw_errors_use_openai_envelope(
    base_url: str, path: str, body: dict[str, Any], status: int, param: str | None
) -> None:
    response = requests.post(f"{base_url}{path}", json=body, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]


def test_invalid_json_uses_openai_envelope(base_url: str) -> None:
    response = requests.post(
        f"{base_url}{COMPLETIONS}",
        data=b'{"model": "tiny", "prompt": ',
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_KEYS
    assert body["error"]["type"] == "invalid_request_error"


def test_internal_errors_become_server_error_without_traceback() -> None:
    # The real handlers on a small in-process app: a replica that fails on purpose would
    # cost a second Serve deployment.
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from lmforge.serve.app import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail from deep inside")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["type"] == "server_error"
    assert "secret" not in error["message"] and "Traceback" not in error["message"]


# ---- the engine alone ------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[Any]:
    from lmforge.serve.hf_engine import HFEngine

    engine = HFEngine(str(model_dir), device="cpu", kv_cache_blocks=8, kv_page_size=64)
    yield engine
    engine.close()


def _deltas(engine: Any, prompt_ids: list[int], **sampling: Any) -> list[Any]:
    """The engine's stream for one request, collected in a fresh event loop."""
    from lmforge.serve.engine import SamplingParams

    async def collect() -> list[Any]:
        return [d async for d in engine.generate_stream(prompt_ids, SamplingParams(**sampling))]

    return asyncio.run(collect())


def test_engine_never_answers_with_nothing(engine: Any) -> None:
    eos = engine.tokenizer.eos_token_id

    def favour_eos(module: Any, inputs: Any, logits: Any) -> Any:
        logits[..., eos] += 1e4  # EOS is now the greedy choice at every step
        return logits

    hook = engine.model.lm_head.register_forward_hook(favour_eos)
    try:
        result = engine.generate(engine.encode_prompt("the cat"), max_tokens=8, temperature=0)
    finally:
        hook.remove()
    # min_new_tokens=1: one token with text, then the EOS that ends the answer.
    assert result.text
    assert result.finish_reason == "stop"
    assert len(result.token_ids) == 2 and result.token_ids[-1] == eos


def test_engine_stream_holds_back_partial_stop_strings(engine: Any) -> None:
    prompt = engine.encode_prompt("the dog")
    # The model is random: take the first seed whose sample is long enough to cut.
    seed, free = next(
        (seed, result)
        for seed in range(100)
        if len((result := engine.generate(prompt, max_tokens=30, seed=seed)).text) >= 8
    )
    stop = free.text[4:7]
    deltas = _deltas(engine, prompt, max_tokens=30, seed=seed, stop=[stop])
    text = "".join(d.text for d in deltas)
    assert text == free.text[: free.text.index(stop)]
    assert [d.finish_reason for d in deltas][-1] == "stop"
    assert all(d.finish_reason is None for d in deltas[:-1])


def test_engine_refuses_pickle_only_folder(tmp_path: Path) -> None:
    # Loading goes through lmforge.platform.hf_model: a pickle checkpoint is never opened.
    from lmforge.platform.hf_model import ModelFolderError
    from lmforge.serve.hf_engine import HFEngine

    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(ModelFolderError, match="pickle"):
        HFEngine(str(tmp_path), device="cpu")


# ---- the response bodies alone -----------------------------------------------------------


def test_streamed_bodies_parse_as_the_client_types() -> None:
    # The chunks are the openai package's own models; what goes on the wire must parse
    # back into them, with `null` where the API sends null and nothing else added.
    import json

    from openai.types import Completion
    from openai.types.chat import ChatCompletionChunk

    from lmforge.serve.responses import ChatBodies, CompletionBodies, usage
    from lmforge.serve.streaming import sse

    def wire(event: str) -> Any:
        assert event.startswith("data: ") and event.endswith("\n\n")
        return json.loads(event.removeprefix("data: "))

    text = wire(sse(CompletionBodies.new(MODEL_NAME).text(0, "hi", [])))
    assert text["choices"] == [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": None}]
    assert text["usage"] is None and "system_fingerprint" not in text
    assert Completion.model_validate(wire(sse(CompletionBodies("x", 0, "m").finish(0, "length"))))

    chat = ChatBodies.new(MODEL_NAME)
    opening, piece, end = chat.opening(0)[0], chat.text(0, "hi", []), chat.finish(0, "stop")
    assert [wire(sse(c))["choices"][0]["delta"] for c in (opening, piece, end)] == [
        {"role": "assistant", "content": ""},
        {"content": "hi"},
        {},
    ]
    last = ChatCompletionChunk.model_validate(wire(sse(chat.usage(usage(3, 2)))))
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens == 5

"""The OpenAI API as clients use it, on the continuously batched `hf` engine.

The official `openai` client (sync and async) against one Serve app of a tiny random
Llama: `n`, `stop`, `seed`, logprobs, the token cap, and 16 concurrent requests whose
greedy answers must equal the ones given one at a time (the batch is shared, and must
not change a token). Errors are checked on the wire with `requests`. The engine alone: a
stream closed early (a client gone) frees its slot in the batch; an `s3://` model folder
is downloaded and checked like a local one.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from openai import AsyncOpenAI, OpenAI

from conftest import free_port, moto_s3, tiny_llama

MODEL_NAME = "tiny-cb"
CAP = 40  # max_tokens_limit of the app
WORDS = ["the cat", "a dog", "eats", "sees", "an apple", "the book", "my friend", "reads"]


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(4)) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Llama with a freshly trained byte-level BPE tokenizer."""
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama-cb"), _sentences(300), vocab_size=300,
                      seed=1, kv_heads=2, max_positions=128)  # fmt: skip


@pytest.fixture(scope="module")
def base_url(model_dir: Path) -> Iterator[str]:
    import ray
    from ray import serve

    from lmforge.serve import build_app

    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app(
            str(model_dir),
            served_model_name=MODEL_NAME,
            default_max_tokens=16,
            max_tokens_limit=CAP,
            engine_options={"kv_cache_blocks": 32, "kv_page_size": 32},
        )
        serve.run(app, name="lmforge-serve-api-test", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_concurrent_greedy_answers_equal_one_at_a_time(client: OpenAI, base_url: str) -> None:
    prompts = _sentences(16, seed=5)
    request: dict[str, Any] = {"model": MODEL_NAME, "max_tokens": 24, "temperature": 0}
    alone = [client.completions.create(prompt=p, **request) for p in prompts]

    async def together() -> list[Any]:
        aclient = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        async with aclient:
            return await asyncio.gather(
                *(aclient.completions.create(prompt=p, **request) for p in prompts)
            )

    batched = asyncio.run(together())
    assert [c.choices[0].text for c in batched] == [c.choices[0].text for c in alone]
    assert [c.usage for c in batched] == [c.usage for c in alone]


def test_async_streamed_chat_equals_whole(base_url: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "a dog reads the book"}]

    async def both() -> tuple[Any, list[Any]]:
        aclient = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        async with aclient:
            kw: dict[str, Any] = {"model": MODEL_NAME, "messages": messages, "seed": 3}
            whole = await aclient.chat.completions.create(**kw, max_completion_tokens=20)
            stream = await aclient.chat.completions.create(
                **kw, max_completion_tokens=20, stream=True, stream_options={"include_usage": True}
            )
            return whole, [c async for c in stream]

    whole, chunks = asyncio.run(both())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage == whole.usage


def test_seed_reproduces_and_n_gives_distinct_seeded_choices(client: OpenAI) -> None:
    request: dict[str, Any] = {"model": MODEL_NAME, "prompt": "the cat", "max_tokens": 16}
    first = client.completions.create(**request, seed=11, n=3)
    again = client.completions.create(**request, seed=11, n=3)
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.text for c in first.choices]
    assert texts == [c.text for c in again.choices]
    assert len(set(texts)) > 1  # each choice samples with its own seed
    # choice i is seeded seed + i: the second choice is the seed-12 answer
    assert client.completions.create(**request, seed=12).choices[0].text == texts[1]
    assert first.usage is not None
    assert first.usage.completion_tokens == sum(
        client.completions.create(**request, seed=11 + i).usage.completion_tokens  # type: ignore[union-attr]
        for i in range(3)
    )


def test_streamed_n_choices_interleave_and_match(client: OpenAI) -> None:
    request: dict[str, Any] = {"model": MODEL_NAME, "prompt": "my friend", "max_tokens": 12}
    whole = client.completions.create(**request, seed=4, n=2)
    chunks = list(client.completions.create(**request, seed=4, n=2, stream=True))
    for i in range(2):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == i]
        assert "".join(c.text for c in mine) == whole.choices[i].text
        assert mine[-1].finish_reason == whole.choices[i].finish_reason


def test_stop_as_string_and_as_list(client: OpenAI) -> None:
    request: dict[str, Any] = {"model": MODEL_NAME, "prompt": "a dog eats", "temperature": 0}
    free = client.completions.create(**request, max_tokens=30).choices[0].text
    assert len(free) >= 6
    one = client.completions.create(**request, max_tokens=30, stop=free[3:5]).choices[0]
    assert one.text == free[: free.index(free[3:5])] and one.finish_reason == "stop"
    two = client.completions.create(**request, max_tokens=30, stop=["\x00never", free[4:6]])
    assert two.choices[0].text == free[: free.index(free[4:6])]


def test_completion_logprobs(client: OpenAI) -> None:
    out = client.completions.create(
        model=MODEL_NAME, prompt="the book", max_tokens=10, temperature=0, logprobs=3
    )
    choice, usage = out.choices[0], out.usage
    assert choice.logprobs is not None and usage is not None
    assert choice.logprobs.token_logprobs is not None and choice.logprobs.top_logprobs is not None
    assert len(choice.logprobs.token_logprobs) == usage.completion_tokens
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs)
    assert all(1 <= len(top) <= 3 for top in choice.logprobs.top_logprobs)
    # after the first token (where special tokens are banned) greedy picks the best one;
    # alternatives are keyed by text, so byte tokens that decode alike ("\ufffd") merge
    for lp, top in zip(
        choice.logprobs.token_logprobs[1:], choice.logprobs.top_logprobs[1:], strict=True
    ):
        assert lp >= max(top.values()) - 1e-5


def test_chat_logprobs_whole_and_streamed(client: OpenAI) -> None:
    request: dict[str, Any] = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "the cat sees"}],
        "max_tokens": 8,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    whole = client.chat.completions.create(**request)
    content = whole.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and whole.usage is not None
    assert len(content) == whole.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.bytes == list(t.token.encode()) for t in content)
    streamed = [
        t
        for c in client.chat.completions.create(**request, stream=True)
        if c.choices and c.choices[0].logprobs and c.choices[0].logprobs.content
        for t in c.choices[0].logprobs.content
    ]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [
        (t.token, round(t.logprob, 4)) for t in content
    ]
    plain = client.chat.completions.create(**{**request, "logprobs": False, "top_logprobs": None})
    assert plain.choices[0].logprobs is None


def test_max_tokens_is_capped_by_config(client: OpenAI) -> None:
    out = client.completions.create(
        model=MODEL_NAME, prompt="the cat", max_tokens=CAP + 30, seed=1, stop=None
    )
    assert out.usage is not None and out.usage.completion_tokens <= CAP


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": "nope", "prompt": "hi"}, 404, None, "model_not_found"),
        ({"model": MODEL_NAME, "prompt": "hi", "temperature": 3}, 400, "temperature", None),
        ({"model": MODEL_NAME, "prompt": "hi", "n": 0}, 400, "n", None),
        ({"model": MODEL_NAME, "prompt": "hi", "logprobs": 99}, 400, "logprobs", None),
        ({"model": MODEL_NAME, "prompt": "hi", "stop": [""]}, 400, "stop", None),
        ({"model": MODEL_NAME, "prompt": "the cat " * 200}, 400, "prompt",
         "context_length_exceeded"),
        ({"model": MODEL_NAME, "prompt": "hi", "max_tokens": 500}, 400, "max_tokens",
         "context_length_exceeded"),
    ],
)  # fmt: skip
def test_bad_requests_over_http(
    base_url: str, body: dict[str, Any], status: int, param: str | None, code: str | None
) -> None:
    response = requests.post(f"{base_url}/v1/completions", json=body, timeout=60)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == code
    assert error["type"] == "invalid_request_error"


def test_openai_client_raises_typed_errors(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], top_logprobs=2
        )
    assert info.value.param == "top_logprobs"


# ---- the engine alone ------------------------------------------------------------------


def test_closed_stream_frees_its_slot(model_dir: Path) -> None:
    from lmforge.serve.engine import SamplingParams
    from lmforge.serve.hf_engine import HFEngine

    engine = HFEngine(str(model_dir), device="cpu", kv_cache_blocks=8, kv_page_size=32)
    try:

        async def leave_early() -> int:
            stream = engine.generate_stream(
                engine.encode_prompt("the cat"), SamplingParams(max_tokens=100, temperature=0)
            )
            await anext(stream)
            busy = engine.in_flight()
            await stream.aclose()  # what a client that disconnects makes the server do
            return busy

        assert asyncio.run(leave_early()) == 1
        deadline = time.time() + 10
        while engine.in_flight() and time.time() < deadline:
            time.sleep(0.05)
        assert engine.in_flight() == 0
        assert not engine._manager.output_router.result_handlers
        engine.check_health()
    finally:
        engine.close()


def test_model_folder_from_s3_is_downloaded_and_checked(model_dir: Path) -> None:
    from lmforge.platform.hf_model import ModelFolderError
    from lmforge.serve.engine import local_model_dir

    with moto_s3("models", endpoint_in_env=True) as (_, s3):
        for f in model_dir.iterdir():
            s3.upload_file(str(f), "models", f"tiny/{f.name}")
        s3.put_object(Bucket="models", Key="pickled/config.json", Body=b"{}")
        s3.put_object(Bucket="models", Key="pickled/pytorch_model.bin", Body=b"not opened")
        local = Path(local_model_dir("s3://models/tiny"))
        assert sorted(p.name for p in local.iterdir()) == sorted(
            p.name for p in model_dir.iterdir()
        )
        with pytest.raises(ModelFolderError, match="pickle"):
            local_model_dir("s3://models/pickled")

"""Operating the endpoint: API keys, overload, timeouts, load, a killed replica, fuzzed
bodies, metrics, the health check (the vLLM config and the Serve config file built from
recipes are in test_serve_config.py).

One Serve instance for the module, with two applications: `tiny` (a random tiny Llama on
the `hf` engine, built from a `ServeConfig` as `lmforge serve` builds it) at `/`, and
`slow` (an engine that sleeps per token, one generation and one waiting at most, a 3 s
request timeout) at `/slow`. Keys come from LMFORGE_API_KEYS of the node (set before Ray
starts, as a cluster node has it) and, for `slow`, from a keys file too.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the HTTP client the openai package uses
import pytest
from openai import OpenAI

from conftest import free_port, tiny_llama

ENV_KEYS = ["env-key-one", "env-key-two"]
FILE_KEY = "file-key-three"
ERROR_KEYS = {"message", "type", "param", "code"}
TOKEN_DELAY_S = 0.25  # the slow engine's time per token
SLOW_TIMEOUT_S = 3.0


class SlowEngine:
    """An engine that takes TOKEN_DELAY_S per token: requests pile up on purpose."""

    max_context_length = 256

    def encode_prompt(self, prompt: str) -> list[int]:
        return [1] * max(1, len(prompt.split()))

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return [1] * len(messages)

    async def generate_stream(self, prompt_ids: list[int], params: Any) -> AsyncIterator[Any]:
        from lmforge.serve.engine import GenerationDelta

        for i in range(params.max_tokens):
            await asyncio.sleep(TOKEN_DELAY_S)
            last = i == params.max_tokens - 1
            yield GenerationDelta("x", [1], "length" if last else None)


def slow_engine(folder: str) -> SlowEngine:
    return SlowEngine()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised two-layer Llama with a freshly trained BPE tokenizer."""
    rng = random.Random(0)
    words = ["the cat", "a dog", "my friend", "eats", "sees", "builds", "an apple", "the book"]
    texts = [" ".join(rng.choices(words, k=4)) for _ in range(300)]
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), texts, vocab_size=300, seed=0,
                      hidden=32, heads=2, kv_heads=2)  # fmt: skip


@dataclass
class Served:
    url: str
    metrics_url: str
    keys_file: Path


@pytest.fixture(scope="module")
def served(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import ray
    from ray import cloudpickle, serve

    from lmforge.serve.app import build_app
    from lmforge.serve.config import ServeConfig
    from lmforge.serve.deploy import build
    from lmforge.serve.deployment import deployment_options, http_options
    from lmforge.serve.operations import OpsSettings

    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text(f"# one key a line\n{FILE_KEY}\n", encoding="utf-8")
    port, metrics_port = free_port(), free_port()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # SlowEngine, by value
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LMFORGE_API_KEYS", ",".join(ENV_KEYS))  # the node's, before Ray starts
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _metrics_export_port=metrics_port,
        )
    try:
        tiny = ServeConfig(
            model=str(model_dir),
            served_model_name="tiny",
            port=port,
            num_cpus=0.5,
            max_tokens=4,
            max_ongoing_requests=8,
            max_queued_requests=64,
            request_timeout_s=60,
        )
        serve.start(http_options=http_options(tiny))
        serve.run(build(tiny), name="tiny", route_prefix="/")
        slow = ServeConfig(
            model=str(model_dir),
            served_model_name="slow",
            num_cpus=0.25,
            max_ongoing_requests=1,
            max_queued_requests=1,
            retry_after_s=2,
            request_timeout_s=SLOW_TIMEOUT_S,
            api_keys_file=str(keys_file),
        )
        app = build_app(
            str(model_dir),
            served_model_name="slow",
            engine_factory=slow_engine,
            ops=OpsSettings.from_config(slow),
            deployment_options=deployment_options(slow),
        )
        serve.run(app, name="slow", route_prefix="/slow")
        yield Served(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", keys_file)
    finally:
        serve.shutdown()
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _completion(model: str = "tiny", **extra: Any) -> dict[str, Any]:
    return {"model": model, "prompt": "the cat sees", "max_tokens": 4, **extra}


def _assert_envelope(response: httpx.Response, status: int, type_: str, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    assert body["error"]["type"] == type_
    assert body["error"]["code"] == code
    assert body["error"]["param"] is None
    assert body["error"]["message"]


# ---- API keys ------------------------------------------------------------------------


def test_health_is_open_without_a_key(served: Served) -> None:
    for prefix in ("", "/slow"):
        response = httpx.get(f"{served.url}{prefix}/health", timeout=30)
        assert response.status_code == 200
        assert response.json()["status"] == "ok"


@pytest.mark.parametrize("headers", [{}, _auth("wrong-key"), {"Authorization": ENV_KEYS[0]}])
def test_a_missing_or_wrong_key_is_401(served: Served, headers: dict[str, str]) -> None:
    for method, path in (("POST", "/v1/completions"), ("GET", "/v1/models")):
        response = httpx.request(
            method, f"{served.url}{path}", json=_completion(), headers=headers, timeout=30
        )
        _assert_envelope(response, 401, "invalid_request_error", "invalid_api_key")
        assert ENV_KEYS[0] not in response.text


def test_a_right_key_is_let_in_through_the_official_client(served: Served) -> None:
    for key in ENV_KEYS:
        client = OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0, timeout=60)
        out = client.completions.create(model="tiny", prompt="a dog finds", max_tokens=3)
        assert out.usage is not None and 1 <= out.usage.completion_tokens <= 3
    # the slow app also takes the key of its keys file; the tiny app does not
    file_client = OpenAI(base_url=f"{served.url}/slow/v1", api_key=FILE_KEY, max_retries=0)
    assert [m.id for m in file_client.models.list().data] == ["slow"]
    response = httpx.get(f"{served.url}/v1/models", headers=_auth(FILE_KEY), timeout=30)
    assert response.status_code == 401


def test_ask_sends_the_first_key_of_the_environment(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmforge.serve.deploy import ask

    monkeypatch.setenv("LMFORGE_API_KEYS", ",".join(ENV_KEYS))
    reply = ask(f"{served.url}/v1", "tiny", "What does the cat eat?", 3)
    assert reply.usage is not None and reply.usage.completion_tokens >= 1


# ---- overload and timeouts -----------------------------------------------------------


async def _fire(url: str, bodies: list[dict[str, Any]], key: str, limit: int) -> list[Any]:
    """POST every body with at most `limit` in flight; an exception is returned, not raised."""
    gate = asyncio.Semaphore(limit)
    async with httpx.AsyncClient(headers=_auth(key), timeout=120) as client:

        async def one(body: dict[str, Any]) -> Any:
            async with gate:
                try:
                    return await client.post(url, json=body)
                except Exception as e:  # a hang ends in the timeout, reported here
                    return e

        return await asyncio.gather(*(one(b) for b in bodies))


def test_overload_answers_503_with_retry_after_in_openai_format(served: Served) -> None:
    url = f"{served.url}/slow/v1/completions"
    answers = asyncio.run(_fire(url, [_completion("slow")] * 8, ENV_KEYS[0], limit=8))
    assert not [a for a in answers if isinstance(a, Exception)]
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 1
    assert statuses.count(200) >= 1  # one ran, one waited for it
    for answer in answers:
        if answer.status_code == 503:
            _assert_envelope(answer, 503, "server_error", "overloaded")
            assert answer.headers["retry-after"] == "2"
        else:
            assert answer.json()["usage"]["completion_tokens"] == 4


def test_a_request_past_its_timeout_is_504_and_frees_its_slot(served: Served) -> None:
    url = f"{served.url}/slow/v1/completions"
    headers = _auth(ENV_KEYS[1])
    t0 = time.perf_counter()
    response = httpx.post(url, json=_completion("slow", max_tokens=40), headers=headers, timeout=60)
    _assert_envelope(response, 504, "server_error", "timeout")
    assert time.perf_counter() - t0 < 30  # cut at the timeout, not after 40 tokens
    # a stream that timed out ends with an error event and [DONE]
    body = _completion("slow", max_tokens=40, stream=True)
    streamed = httpx.post(url, json=body, headers=headers, timeout=60)
    assert streamed.status_code == 200
    events = [e for e in streamed.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "timeout"
    # the slots are free again
    assert httpx.post(url, json=_completion("slow"), headers=headers, timeout=60).status_code == 200


# ---- load, fuzz, metrics, a killed replica -------------------------------------------


def test_load_200_requests_at_concurrency_32(served: Served) -> None:
    rng = random.Random(0)
    words = ["the cat", "a dog", "my friend", "sees", "builds", "an apple", "the book"]
    bodies = [
        _completion(prompt=" ".join(rng.choices(words, k=3)), max_tokens=rng.randint(1, 4))
        for _ in range(200)
    ]
    answers = asyncio.run(_fire(f"{served.url}/v1/completions", bodies, ENV_KEYS[0], 32))
    errors = [a for a in answers if isinstance(a, Exception) or a.status_code not in (200, 503)]
    assert not errors, errors[:3]
    ok = [a for a in answers if a.status_code == 200]
    assert len(ok) >= 100  # 32 in flight fit 8 running + 64 waiting: 503s are not expected
    for answer, body in zip(answers, bodies, strict=True):
        if answer.status_code == 200:
            assert 1 <= answer.json()["usage"]["completion_tokens"] <= body["max_tokens"]


def _fuzzed_bodies(n: int, seed: int = 0) -> list[Any]:
    """Bodies that are each wrong in one way: a wrong type, an out-of-range or huge value,
    a missing field, an unknown model, or not an object at all."""
    rng = random.Random(seed)
    bad_values: dict[str, list[Any]] = {
        "model": [None, 12, ["tiny"], {"id": "tiny"}, "gpt-4-unknown"],
        "max_tokens": [-1, 0, 10**30, 1.5, "many", [], {}],
        "temperature": [-1, 2.5, "hot", 1e308, [0.5]],
        "top_p": [0, -0.5, 2, "x"],
        "n": [0, -3, "two"],
        "stop": [["a", "b", "c", "d", "e"], 123, [1, 2], [""]],
        "seed": ["abc", 2**70, [1]],
        "stream": [{"a": 1}, [True]],
        "prompt": [{"a": 1}, 12.5, None, "word " * 2000],
    }
    chat_bad: dict[str, list[Any]] = {
        "messages": [[], "hi", [{"role": "robot", "content": "x"}], [{"content": "x"}],
                     [{"role": "user", "content": 123}], [{"role": "user", "content": [{}]}]],
    }  # fmt: skip
    not_objects: list[Any] = [[], "text", 123, None, True, [[[[[]]]]] * 3, "\u0000" * 50]
    out: list[Any] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.6:
            field = rng.choice(list(bad_values))
            body: Any = _completion(**{field: rng.choice(bad_values[field])})
            out.append(("/v1/completions", body))
        elif kind < 0.8:
            body = {"model": "tiny", "messages": rng.choice(chat_bad["messages"])}
            out.append(("/v1/chat/completions", body))
        elif kind < 0.9:
            body = _completion()
            del body[rng.choice(["model", "prompt"])]
            out.append(("/v1/completions", body))
        else:
            path = rng.choice(["/v1/completions", "/v1/chat/completions"])
            out.append((path, rng.choice(not_objects)))
    return out


def test_fuzzed_bodies_are_answered_4xx_never_5xx(served: Served) -> None:
    raw = [b'{"model": "tiny", "prompt": ', b"\xff\xfe not json", b"[" * 5000 + b"]" * 5000]
    with httpx.Client(headers=_auth(ENV_KEYS[0]), timeout=60) as client:
        for path, body in _fuzzed_bodies(120):
            response = client.post(f"{served.url}{path}", json=body)
            assert 400 <= response.status_code < 500, (path, body, response.text[:300])
            assert set(response.json()["error"]) == ERROR_KEYS
        for data in raw:
            response = client.post(
                f"{served.url}/v1/completions",
                content=data,
                headers={"Content-Type": "application/json"},
            )
            assert 400 <= response.status_code < 500, (data[:40], response.text[:300])


def _scrape(url: str) -> dict[str, float]:
    """`name{labels}` -> value of the lmforge series of a Prometheus text page."""
    found: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("ray_lmforge_"):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def _total(series: dict[str, float], name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v for s, v in series.items() if s.startswith(name + "{") and all(w in s for w in want)
    )


def test_metrics_are_exported_to_prometheus(served: Served) -> None:
    # the tests above sent 200s, 401s, 503s and 504s; Ray's agent exports every ~10 s
    deadline = time.time() + 90
    while True:
        series = _scrape(served.metrics_url)
        requests = "ray_lmforge_requests_total"
        tiny_ok = _total(series, requests, model="tiny", route="/v1/completions", status="200")
        seen = {
            "tiny 200": tiny_ok >= 100,
            "401": _total(series, requests, status="401") >= 1,
            "slow 503": _total(series, requests, model="slow", status="503") >= 1,
            "slow 504": _total(series, requests, model="slow", status="504") >= 1,
            "tokens": _total(series, "ray_lmforge_generated_tokens_total", model="tiny") >= 100,
            "ttft": _total(series, "ray_lmforge_ttft_seconds_count", model="tiny") >= 100,
            "latency": _total(series, "ray_lmforge_latency_seconds_count", model="slow") >= 2,
            "gauge": any(s.startswith("ray_lmforge_queued_requests{") for s in series),
        }
        if all(seen.values()):
            return
        if time.time() > deadline:
            pytest.fail(f"metrics missing: {[k for k, v in seen.items() if not v]}")
        time.sleep(3)


def test_a_replica_killed_under_load_is_replaced(served: Served) -> None:
    import ray

    (replica,) = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::tiny#")
    ]
    url = f"{served.url}/v1/completions"

    async def load_and_kill() -> list[Any]:
        load = asyncio.ensure_future(_fire(url, [_completion()] * 48, ENV_KEYS[0], limit=8))
        await asyncio.sleep(0.5)
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
        return await load

    answers = asyncio.run(load_and_kill())
    # every request was answered (none hung); the ones on the dead replica may have failed
    assert not [a for a in answers if isinstance(a, Exception)]
    deadline = time.time() + 180
    headers = _auth(ENV_KEYS[0])
    while httpx.post(url, json=_completion(), headers=headers, timeout=60).status_code != 200:
        assert time.time() < deadline, "no replica answered after the kill"
        time.sleep(2)
    later = asyncio.run(_fire(url, [_completion()] * 16, ENV_KEYS[0], limit=8))
    assert [a.status_code for a in later] == [200] * 16


# ---- without a Serve app ---------------------------------------------------------------


def test_a_broken_engine_fails_the_health_check(served: Served) -> None:  # Ray is up
    from lmforge.serve.metrics import RequestRecord
    from lmforge.serve.operations import ENGINE_FAILURES_UNHEALTHY, OpsSettings, ReplicaOps

    ops = ReplicaOps(OpsSettings(), model="unit")
    ops.check_health(object())
    for _ in range(ENGINE_FAILURES_UNHEALTHY):
        ops.finish(RequestRecord("r", "/v1/completions", engine_failed=True), 500)
    with pytest.raises(RuntimeError, match="engine failed"):
        ops.check_health(object())
    ops.finish(RequestRecord("r", "/v1/completions", completion_tokens=3), 200)
    ops.check_health(object())

    class DeadEngine:
        def check_health(self) -> None:
            raise RuntimeError("the batching loop died")

    with pytest.raises(RuntimeError, match="batching loop"):
        ops.check_health(DeadEngine())

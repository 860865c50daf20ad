"""The Ray Serve application: an OpenAI-compatible HTTP API over one engine.

    app = build_app("models:/tiny@champion", served_model_name="tiny")
    serve.run(app, route_prefix="/")

Routes: `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (both with
`stream`), `GET /health`. Requests are validated by `protocol.py`, responses are the
`openai` package's own types (`responses.py`), streams are sent by `streaming.py`, and
every error comes back in OpenAI's envelope (`errors.py`). This module checks a request
against the model (its name, the context length) and runs the engine.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from fastapi import FastAPI
from ray import serve

from lmforge.serve.engine import Engine, SamplingParams, generate
from lmforge.serve.errors import OpenAIError, install_error_handlers
from lmforge.serve.metrics import MeteredEngine
from lmforge.serve.operations import OpsSettings, ReplicaOps, install_operations
from lmforge.serve.protocol import ChatCompletionRequest, CompletionRequest
from lmforge.serve.responses import ChatBodies, CompletionBodies, model_list, to_json, usage
from lmforge.serve.streaming import sse_events, streaming_response

__all__ = ["EngineFactory", "OpenAIServer", "build_app", "install_error_handlers"]

EngineFactory = Callable[[str], Engine]

# Serve forwards the "ray.serve" logger to the replica's log file and the driver.
logger = logging.getLogger("ray.serve")

# `serve.ingress` freezes (pickles) the app when the class below is decorated: the route
# functions keep only the module globals that exist at that moment, so the handlers and
# every helper the routes call must exist (be defined or imported) above the class.
api = FastAPI(title="lmforge", docs_url=None, redoc_url=None)
install_error_handlers(api)
install_operations(api)  # API keys, admission (503), timeout, log line, metrics


@serve.deployment
@serve.ingress(api)
class OpenAIServer:
    """Serves one model under `served_model_name` through the OpenAI HTTP API."""

    def __init__(
        self,
        model: str,
        *,
        served_model_name: str,
        default_max_tokens: int = 64,
        max_tokens_limit: int | None = None,
        engine_factory: EngineFactory | None = None,
        engine_options: dict[str, Any] | None = None,
        ops: OpsSettings | None = None,
    ) -> None:
        # Resolved here, in the replica, so a `models:/NAME@ALIAS` URI (or an `s3://`
        # folder) is downloaded on the node that serves it, not where it was deployed.
        from lmforge.platform.registry import model_version_info
        from lmforge.serve.engine import local_model_dir

        model_dir = local_model_dir(model)
        # the version and training run behind a registry URI, shown by GET /v1/models
        self._registry = model_version_info(model) if model.startswith("models:/") else {}
        if engine_factory is None:
            from lmforge.serve.hf_engine import HFEngine

            self._engine: Engine = HFEngine(model_dir, **(engine_options or {}))
        else:
            self._engine = engine_factory(model_dir)
        self._ops = ReplicaOps.start(ops or OpsSettings(), model=served_model_name)
        self._engine = MeteredEngine(self._engine)  # tokens and TTFT of each request
        self._name = served_model_name
        self._default_max_tokens = default_max_tokens
        self._max_tokens_limit = max_tokens_limit
        self._created = int(time.time())
        logger.info("Serving model %r as %r from %s", model, served_model_name, model_dir)

    def check_health(self) -> None:
        """Serve's periodic health check: raises when the engine is broken."""
        self._ops.check_health(self._engine)

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        """Liveness of the replica and the name of its model."""
        return {"status": "ok", "model": self._name}

    @api.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        """The one served model."""
        return to_json(model_list(self._name, self._created, self._registry))

    @api.post("/v1/completions")
    async def completions(self, body: CompletionRequest) -> Any:
        """Complete one prompt (OpenAI `POST /v1/completions`)."""
        self._check_model(body.model)
        prompt_ids = await asyncio.to_thread(self._engine.encode_prompt, body.prompt_text)
        params = self._sampling(body, prompt_ids, body.max_tokens, "max_tokens", "prompt")
        bodies = CompletionBodies.new(self._name, logprobs=params.logprobs is not None)
        return await self._respond(body, prompt_ids, params, bodies)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest) -> Any:
        """Answer a conversation (OpenAI `POST /v1/chat/completions`)."""
        self._check_model(body.model)
        messages = [m.as_template_message() for m in body.messages]
        try:
            prompt_ids = await asyncio.to_thread(self._engine.encode_chat, messages)
        except Exception as exc:  # a chat template rejects a conversation by raising
            raise OpenAIError(400, f"Cannot render messages: {exc}", param="messages") from exc
        limit_param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        params = self._sampling(body, prompt_ids, body.token_limit, limit_param, "messages")
        bodies = ChatBodies.new(self._name, logprobs=params.logprobs is not None)
        return await self._respond(body, prompt_ids, params, bodies)

    # ---- helpers ------------------------------------------------------------------------

    def _check_model(self, model: str) -> None:
        if model != self._name:
            raise OpenAIError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )

    def _sampling(
        self,
        body: CompletionRequest | ChatCompletionRequest,
        prompt_ids: list[int],
        requested: int | None,
        limit_param: str,
        prompt_param: str,
    ) -> SamplingParams:
        """How to sample; the token budget is checked against the context, then capped."""
        context = self._engine.max_context_length
        room = context - len(prompt_ids)
        if not prompt_ids or room < 1:
            raise OpenAIError(
                400,
                f"This model's maximum context length is {context} tokens, and the prompt "
                f"has {len(prompt_ids)} tokens; it must have between 1 and {context - 1}.",
                param=prompt_param,
                code="context_length_exceeded" if prompt_ids else None,
            )
        if requested is not None and requested > room:
            raise OpenAIError(
                400,
                f"This model's maximum context length is {context} tokens. However, you "
                f"requested {len(prompt_ids) + requested} tokens ({len(prompt_ids)} in the "
                f"prompt, {requested} for the completion).",
                param=limit_param,
                code="context_length_exceeded",
            )
        # Without an explicit limit, fill what the context leaves, up to the default.
        max_tokens = requested or min(self._default_max_tokens, room)
        if self._max_tokens_limit is not None:
            max_tokens = min(max_tokens, self._max_tokens_limit)
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stop_list,
            seed=body.seed,
            logprobs=body.top_logprobs_count,
        )

    async def _respond(
        self,
        body: CompletionRequest | ChatCompletionRequest,
        prompt_ids: list[int],
        params: SamplingParams,
        bodies: CompletionBodies | ChatBodies,
    ) -> Any:
        """Generate `n` choices (each a request of the engine's batch, seeded `seed + i`),
        and answer with the whole body (JSON) or with a stream of chunks."""
        choices = [
            replace(params, seed=None if params.seed is None else params.seed + i)
            for i in range(body.n)
        ]
        if body.stream:
            events = sse_events(
                [self._engine.generate_stream(prompt_ids, p) for p in choices],
                bodies,
                prompt_tokens=len(prompt_ids),
                include_usage=bool(body.stream_options and body.stream_options.include_usage),
            )
            return streaming_response(events)
        results = await asyncio.gather(*(generate(self._engine, prompt_ids, p) for p in choices))
        counts = usage(len(prompt_ids), sum(len(r.token_ids) for r in results))
        return to_json(bodies.whole(list(results), counts))


def build_app(
    model: str,
    *,
    served_model_name: str,
    num_replicas: int = 1,
    ray_actor_options: dict[str, Any] | None = None,
    default_max_tokens: int = 64,
    max_tokens_limit: int | None = None,
    engine_factory: EngineFactory | None = None,
    engine_options: dict[str, Any] | None = None,
    ops: OpsSettings | None = None,
    deployment_options: dict[str, Any] | None = None,
) -> serve.Application:
    """The Serve application for `model` (a local HF directory or `models:/NAME@ALIAS`).

    `engine_factory(model_dir) -> Engine` replaces `HFEngine` (e.g. a vLLM engine, or a
    small fake in tests); it is pickled and called inside each replica. Otherwise
    `HFEngine(model_dir, **engine_options)` (its KV cache size, batch size).
    `max_tokens_limit` caps every request's completion length.
    `ray_actor_options` is passed to each replica (e.g. `{"num_gpus": 1}`).
    `ops`: keys, limits and timeout of each replica; `deployment_options` replace
    `num_replicas` (`lmforge.serve.deployment.deployment_options` makes both agree).
    """
    options: dict[str, Any] = dict(deployment_options or {"num_replicas": num_replicas})
    if ray_actor_options is not None:
        options["ray_actor_options"] = ray_actor_options
    deployment = cast(serve.Deployment, OpenAIServer)  # the decorator made it one
    return deployment.options(**options).bind(
        model,
        served_model_name=served_model_name,
        default_max_tokens=default_max_tokens,
        max_tokens_limit=max_tokens_limit,
        engine_factory=engine_factory,
        engine_options=engine_options,
        ops=ops,
    )

"""Serving: a Ray Serve application with an OpenAI-compatible HTTP API.

    from lmforge.serve import build_app
    serve.run(build_app("models:/tiny@champion", served_model_name="tiny"), route_prefix="/")

The engine is injectable (`build_app(engine_factory=...)`); `HFEngine` runs a Hugging
Face causal LM with transformers' continuous batching. `deploy.py` starts the app from a recipe's
`ServeConfig` (`config.py`). Names are imported on first use, so importing this package
does not import Ray, FastAPI or torch.

This package depends on `lmforge.platform` only, never on `pipelines`, `train` or `jobs`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.serve.app import EngineFactory, OpenAIServer, build_app
    from lmforge.serve.engine import Engine, GenerationDelta, GenerationResult, SamplingParams
    from lmforge.serve.hf_engine import HFEngine

__all__ = [
    "Engine",
    "EngineFactory",
    "GenerationDelta",
    "GenerationResult",
    "HFEngine",
    "OpenAIServer",
    "SamplingParams",
    "build_app",
]

_WHERE = {
    "Engine": "lmforge.serve.engine",
    "GenerationDelta": "lmforge.serve.engine",
    "GenerationResult": "lmforge.serve.engine",
    "HFEngine": "lmforge.serve.hf_engine",
    "SamplingParams": "lmforge.serve.engine",
    "EngineFactory": "lmforge.serve.app",
    "OpenAIServer": "lmforge.serve.app",
    "build_app": "lmforge.serve.app",
}


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attribute: the Serve/FastAPI import cost is paid by users of the app.
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

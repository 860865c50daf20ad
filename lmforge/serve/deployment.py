"""A recipe's `serve:` section as Ray Serve options, and as a Serve config file.

    deployment_options(cfg)   # -> Deployment.options(**...) of the lmforge app
    http_options(cfg)         # -> serve.start(http_options=...)
    serve_config_file(cfg)    # -> the YAML of `serve run` / `serve deploy` / serveConfigV2

How the limits fit. A replica admits `max_ongoing_requests` generations and keeps
`max_queued_requests` more waiting (`admission.py`); a request beyond them is answered
at once with a 503 in OpenAI's error JSON and `Retry-After`. So that the replica, not
Serve's proxy, is the one that says no, Serve lets `ADMISSION_HEADROOM` more requests
than that reach a replica, and lets as many wait at the proxy (a burst waits there for
its replica to be chosen). Serve's own `max_queued_requests` (at the proxy) is thus the
last bound, for when no replica can take a request at all (all of them starting, or a
burst larger than that): its 503 carries `Retry-After` too, but its body is Ray's plain text, which
Ray 2.60 lets no application change (`HTTPOptions.middlewares` was removed). The proxy's
request timeout is the recipe's plus `PROXY_TIMEOUT_GRACE_S`, so the replica's 504 in
OpenAI's format comes first.
"""

from __future__ import annotations

from typing import Any

from lmforge.serve.config import ServeConfig

APP_NAME = "lmforge"  # the Serve application name, one per cluster
IMPORT_PATH = "lmforge.serve.deploy:app_builder"
ADMISSION_HEADROOM = 16  # requests a full replica still receives, to answer them 503
PROXY_TIMEOUT_GRACE_S = 10.0
HEALTH_CHECK_PERIOD_S = 10.0
HEALTH_CHECK_TIMEOUT_S = 30.0
# fields of the serve section that are about the driver, not about the application
_DRIVER_ONLY = {"demo_prompt", "blocking", "host", "port", "proxy_location"}


def actor_options(cfg: ServeConfig) -> dict[str, Any]:
    """`ray_actor_options` of a replica: its CPUs, GPUs and accelerator type."""
    options: dict[str, Any] = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}
    if cfg.accelerator_type is not None:
        options["accelerator_type"] = cfg.accelerator_type
    return options


def scaling_options(cfg: ServeConfig) -> dict[str, Any]:
    """`num_replicas`, or `autoscaling_config` when the recipe asks for autoscaling."""
    if cfg.autoscaling is None:
        return {"num_replicas": cfg.num_replicas}
    return {"autoscaling_config": cfg.autoscaling.model_dump()}


def deployment_options(cfg: ServeConfig) -> dict[str, Any]:
    """Keyword arguments of `Deployment.options` for the `hf` engine's app."""
    return {
        **scaling_options(cfg),
        "ray_actor_options": actor_options(cfg),
        "max_ongoing_requests": (
            cfg.max_ongoing_requests + cfg.max_queued_requests + ADMISSION_HEADROOM
        ),
        # a burst waits at the proxy until it is assigned: room for it to reach a replica
        "max_queued_requests": cfg.max_ongoing_requests
        + cfg.max_queued_requests
        + ADMISSION_HEADROOM,
        "backpressure_config": {"status_code": 503, "retry_after_s": cfg.retry_after_s},
        "graceful_shutdown_timeout_s": cfg.graceful_shutdown_timeout_s,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
    }


def http_options(cfg: ServeConfig, *, address: bool = True) -> dict[str, Any]:
    """Serve's `http_options`; `address=False` leaves host and port to the platform
    (KubeRay runs the proxy on its own port)."""
    options: dict[str, Any] = {"request_timeout_s": cfg.request_timeout_s + PROXY_TIMEOUT_GRACE_S}
    if address:
        options.update(host=cfg.host, port=cfg.port)
    return options


def app_args(cfg: ServeConfig) -> dict[str, Any]:
    """The `args` of the application in a Serve config file: the serve section, less
    what only the driver reads. Never a key: keys stay on the nodes (`auth.py`)."""
    return cfg.model_dump(mode="json", exclude_none=True, exclude=_DRIVER_ONLY)


def serve_config_file(cfg: ServeConfig, *, address: bool = True) -> dict[str, Any]:
    """A Serve config file (`ServeDeploySchema`) that serves `cfg.model` through
    `IMPORT_PATH`; `serve deploy FILE` or a RayService's serveConfigV2."""
    if cfg.model is None or cfg.served_model_name is None:
        raise ValueError("serve.model and serve.served_model_name must be set")
    return {
        "proxy_location": cfg.proxy_location,
        "http_options": http_options(cfg, address=address),
        "applications": [
            {
                "name": APP_NAME,
                "import_path": IMPORT_PATH,
                "route_prefix": "/",
                "args": app_args(cfg),
            }
        ],
    }

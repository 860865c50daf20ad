"""API keys: `Authorization: Bearer KEY`, checked in constant time.

Keys come from the environment variable `LMFORGE_API_KEYS` (comma-separated) of the
node a replica runs on, and from `serve.api_keys_file` (one key per line, `#` comments),
read by the replica itself: a key never travels in a runtime env, a Serve config file or
a log line. With no key configured every request is let in (a laptop on loopback); a
replica bound beyond loopback without keys says so at start.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

ENV_VAR = "LMFORGE_API_KEYS"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

logger = logging.getLogger("ray.serve")


def load_keys(keys_file: str | None = None) -> list[str]:
    """The configured keys: the environment variable's, then the file's (if named)."""
    keys = [k.strip() for k in os.environ.get(ENV_VAR, "").split(",")]
    if keys_file:
        lines = Path(keys_file).expanduser().read_text(encoding="utf-8").splitlines()
        keys += [line.strip() for line in lines if not line.lstrip().startswith("#")]
    return list(dict.fromkeys(k for k in keys if k))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, None without one."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeys:
    """The keys one replica accepts. `allows(header)` compares in constant time."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def required(self) -> bool:
        """Whether any key is configured (without one, every request is let in)."""
        return bool(self._keys)

    def allows(self, authorization: str | None) -> bool:
        """Whether the `Authorization` header carries one of the keys."""
        if not self._keys:
            return True
        token = (bearer_token(authorization) or "").encode()
        # every key is compared, so the time does not tell which one nearly matched
        return sum(hmac.compare_digest(token, key) for key in self._keys) > 0


def warn_if_open(host: str, keys: ApiKeys) -> str | None:
    """Log (and return) a warning when the proxy binds beyond loopback with no key."""
    if host in LOOPBACK or keys.required:
        return None
    message = (
        f"serve.host is {host} (reachable from other machines) and no API key is set: "
        f"anyone who can reach the port can use the model; set {ENV_VAR} or "
        "serve.api_keys_file"
    )
    logger.warning(message)
    return message


def client_key(keys_file: str | None = None) -> str | None:
    """The key a client on this machine sends (the first configured one), or None."""
    keys = load_keys(keys_file) if keys_file and Path(keys_file).exists() else load_keys()
    return keys[0] if keys else None

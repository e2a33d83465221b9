"""Checking a Ray cluster address before joining it.

``ray.init(address=...)`` retries an unreachable head node for as long as it runs (minutes,
without a word), so a command that joins a cluster first opens a plain TCP connection to the
head's port with a timeout: an address nobody answers at is refused in bounded time, in one
line that names the option and the address.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

#: the head node's GCS port when an address gives none (Ray's default)
DEFAULT_PORT = 6379
#: seconds to wait for the head node to accept a connection
CONNECT_TIMEOUT_S = 10.0


def ray_endpoint(address: str, option: str) -> tuple[str, int] | None:
    """The ``(host, port)`` that joining ``address`` connects to first; ``None`` for ``auto``
    (Ray finds a cluster started on this machine, or says there is none, at once) and for
    ``local`` (Ray starts one here)."""
    text = address.strip()
    if not text:
        raise ValueError(f"{option} '': give a Ray address (host:port, ray://host:port or auto)")
    if text in ("auto", "local"):
        return None
    parsed = urlsplit(text if "://" in text else f"ray-gcs://{text}")
    if parsed.scheme not in ("ray", "ray-gcs") or not parsed.hostname:
        raise ValueError(
            f"{option} {address}: not a Ray address (expected host:port, ray://host:port or auto)"
        )
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"{option} {address}: the port must be a number in 1..65535") from None
    if port == 0:
        raise ValueError(f"{option} {address}: the port must be a number in 1..65535")
    if port is None:
        port = 10001 if parsed.scheme == "ray" else DEFAULT_PORT
    return parsed.hostname, port


def check_ray_address(address: str, option: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ValueError (one line naming ``option`` and ``address``) unless something accepts
    a connection at the address's head node within ``timeout_s`` seconds."""
    endpoint = ray_endpoint(address, option)
    if endpoint is None:
        return
    host, port = endpoint
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except TimeoutError:
        raise ValueError(
            f"{option} {address}: no Ray head node answered at {host}:{port} within {timeout_s:g} s"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(
            f"{option} {address}: cannot reach a Ray head node at {host}:{port} ({reason})"
        ) from None

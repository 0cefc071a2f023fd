"""Fetching an image from a URL someone else chose, without becoming their proxy into our network.

Refused: schemes other than http(s); hosts that resolve to private, loopback, link-local,
multicast, reserved or unspecified addresses (checked on every address the name resolves to,
and the connection goes to the address that was checked, so DNS rebinding cannot swap it);
redirects anywhere the first URL could not go (each hop is checked again, at most
``MAX_REDIRECTS``); bodies over ``max_bytes`` (from ``Content-Length`` and while streaming); and
servers slower than ``timeout`` seconds for the whole exchange, not only per read.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from contextlib import closing
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

MAX_REDIRECTS = 3


class FetchRefused(ValueError):
    """The URL, its address, its size or its server's speed is not acceptable; the message says which."""


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 20_000_000
    timeout: float = 10.0
    allow_private: bool = False  # tests and closed networks only


def fetch(url: str, policy: FetchPolicy) -> bytes:
    """The body at ``url`` (following checked redirects), or :class:`FetchRefused`."""
    deadline = time.monotonic() + policy.timeout
    for _ in range(MAX_REDIRECTS + 1):
        host, address, port = _check(url, policy)
        response = _get(url, host, address, port, policy, deadline)
        if response is None:
            raise FetchRefused(f"{url} took longer than {policy.timeout:g} s")
        status, location, body = response
        if status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        if status != 200:
            raise FetchRefused(f"{url} answered HTTP {status}")
        return body
    raise FetchRefused(f"more than {MAX_REDIRECTS} redirects")


def _check(url: str, policy: FetchPolicy) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs are fetched, not {parts.scheme or 'a relative URL'!r}")
    if not parts.hostname:
        raise FetchRefused(f"{url!r} names no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FetchRefused(f"cannot resolve {parts.hostname}: {e}") from e
    # An IPv4 / IPv6 sockaddr starts with the address as a string (typeshed also allows other families').
    addresses = sorted({str(info[4][0]) for info in infos})
    if not policy.allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise FetchRefused(f"{parts.hostname} resolves to {address}, which is not a public address")
    return parts.hostname, addresses[0], port


def _get(url: str, host: str, address: str, port: int, policy: FetchPolicy, deadline: float):
    """One request to the checked ``address``; ``(status, location, body)``, or None past the deadline."""
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    timeout = httpx.Timeout(remaining)
    headers = {"host": host if parts.port is None else f"{host}:{parts.port}", "accept": "image/*"}
    # The TLS name (SNI and the certificate check) stays the host's, although we dial its address.
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
            # an httpx Response is not a context manager: closing() releases the streamed connection
            with closing(client.send(request, stream=True)) as response:
                if response.status_code != 200:
                    return response.status_code, response.headers.get("location"), b""
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > policy.max_bytes:
                    raise FetchRefused(f"{url} is {declared} bytes; the limit is {policy.max_bytes}")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise FetchRefused(f"{url} is over the limit of {policy.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        return None
                    chunks.append(chunk)
                return 200, None, b"".join(chunks)
    except httpx.TimeoutException:
        return None
    except httpx.HTTPError as e:
        raise FetchRefused(f"{url} could not be fetched: {type(e).__name__}: {e}") from e

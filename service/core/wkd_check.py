"""Tells a domain owner whether WKD for their domain reaches this server.

It resolves `openpgpkey.<domain>`, fetches the domain's policy file over HTTPS the way a
client would, and checks that the answer came from this service. It never lists addresses.
Addresses that are not globally routable are not contacted unless allowed (a user-chosen
domain must not make the server probe its own network).

Anyone can name any domain, so the check is built not to be held hostage by it:

- one deadline covers everything (resolving, connecting, the TLS handshake, reading): a
  server that sends a byte every few seconds gets no more time than a silent one;
- the name is resolved once, and the connection goes to an address that was checked, so
  a second answer from the domain's DNS (rebinding) cannot point it into our network; TLS
  still verifies the certificate for the name (SNI and host name check);
- no redirect is followed, and only the answer's status line and headers are read.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SITE_HEADER = "X-Keydir-Site"
# The status line and headers of a policy answer fit in far less.
_MAX_HEAD_BYTES = 16384

_AddressInfo = tuple[Any, ...]  # an entry of socket.getaddrinfo


@dataclass(frozen=True, slots=True)
class WkdCheck:
    domain: str
    host: str
    resolved: list[str] = field(default_factory=list)
    dns_ok: bool = False
    policy_ok: bool = False
    served_here: bool = False
    problem: str | None = None


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; TimeoutError once there are none."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left


class _BadAnswer(Exception):
    """The server answered something that is not HTTP."""


def check_domain(
    domain: str, site_name: str, *, allow_private: bool = False, timeout: float = 10.0
) -> WkdCheck:
    """Check `https://openpgpkey.<domain>/.well-known/openpgpkey/<domain>/policy`; the whole
    check ends within ``timeout`` seconds."""
    deadline = _Deadline(timeout)
    host = f"openpgpkey.{domain}"
    try:
        infos = _resolve(host, deadline)
    except TimeoutError:
        return WkdCheck(domain, host, problem=f"{host} did not resolve within {timeout:g} seconds.")
    except (OSError, UnicodeError) as exc:
        return WkdCheck(
            domain,
            host,
            problem=f"{host} does not resolve ({exc}). Add a CNAME "
            f"record for {host} pointing at {site_name}.",
        )
    resolved = sorted({str(info[4][0]) for info in infos})
    if not allow_private and not all(ipaddress.ip_address(a).is_global for a in resolved):
        return WkdCheck(
            domain,
            host,
            resolved,
            dns_ok=True,
            problem=f"{host} resolves to a private address; it was not contacted.",
        )
    url = f"https://{host}/.well-known/openpgpkey/{domain}/policy"
    try:
        status, headers = _fetch_head(
            infos, host, f"/.well-known/openpgpkey/{domain}/policy", deadline
        )
    except TimeoutError:
        return WkdCheck(
            domain,
            host,
            resolved,
            True,
            problem=f"{url} did not answer within {timeout:g} seconds.",
        )
    except _BadAnswer as exc:
        return WkdCheck(domain, host, resolved, True, problem=f"{url} answered {exc}.")
    except (OSError, ssl.SSLError) as exc:
        return WkdCheck(
            domain,
            host,
            resolved,
            True,
            problem=f"{url} could not be fetched over HTTPS ({exc}). Is there a "
            f"valid TLS certificate for {host}?",
        )
    if status != 200:
        # A redirect (3xx) could point anywhere, the server's own network included: it is
        # reported, never followed.
        return WkdCheck(domain, host, resolved, True, problem=f"{url} answered {status}.")
    served_here = headers.get(SITE_HEADER.lower()) == site_name
    problem = (
        None if served_here else f"{url} answers, but not from {site_name}: is {host} pointed here?"
    )
    return WkdCheck(domain, host, resolved, True, True, served_here, problem)


def _resolve(host: str, deadline: _Deadline) -> list[_AddressInfo]:
    """getaddrinfo, given up on at the deadline (it has no timeout of its own; the
    abandoned lookup ends with the resolver's own timeouts)."""
    answer: list[_AddressInfo] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            answer.extend(socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            failure.append(exc)

    thread = threading.Thread(target=lookup, name="wkd-check-resolve", daemon=True)
    thread.start()
    thread.join(deadline.left())
    if thread.is_alive():
        raise TimeoutError
    if failure:
        raise failure[0]
    return answer


def _fetch_head(
    infos: list[_AddressInfo], host: str, path: str, deadline: _Deadline
) -> tuple[int, dict[str, str]]:
    """GET ``path`` from the first of the resolved addresses that connects; return the
    answer's status and headers (names lower-case).

    Every blocking step is given only the time left: CPython bounds one TLS handshake or
    one read by its socket's timeout as a whole, so no step can outlive the deadline.
    """
    context = ssl.create_default_context()
    last: OSError | None = None
    for family, kind, proto, _name, address in infos:
        raw = socket.socket(family, kind, proto)
        try:
            raw.settimeout(deadline.left())
            raw.connect(address)
        except OSError as exc:
            raw.close()
            if isinstance(exc, TimeoutError):
                raise
            last = exc
            continue
        with raw:
            raw.settimeout(deadline.left())
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.settimeout(deadline.left())
                request = (
                    f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: keydir-wkd-check\r\n"
                    "Connection: close\r\n\r\n"
                )
                tls.sendall(request.encode("ascii"))
                return _read_head(tls, deadline)
    raise last or OSError(f"no address of {host} to connect to")


def _read_head(tls: ssl.SSLSocket, deadline: _Deadline) -> tuple[int, dict[str, str]]:
    head = b""
    while b"\r\n\r\n" not in head:
        if len(head) > _MAX_HEAD_BYTES:
            raise _BadAnswer("with headers too long to be a policy file")
        tls.settimeout(deadline.left())
        chunk = tls.recv(4096)
        if not chunk:
            break
        head += chunk
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise _BadAnswer("something that is not HTTP")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers

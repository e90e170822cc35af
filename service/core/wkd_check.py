"""Tells a domain owner whether WKD for their domain reaches this server.

It resolves `openpgpkey.<domain>`, fetches the domain's policy file over HTTPS the way a
client would, and checks that the answer came from this service. It never lists addresses.
Addresses that are not globally routable are not contacted unless allowed (a user-chosen
domain must not make the server probe its own network).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field

SITE_HEADER = "X-Keydir-Site"


@dataclass(frozen=True, slots=True)
class WkdCheck:
    domain: str
    host: str
    resolved: list[str] = field(default_factory=list)
    dns_ok: bool = False
    policy_ok: bool = False
    served_here: bool = False
    problem: str | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could point anywhere, the server's own network included: report it."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def check_domain(
    domain: str, site_name: str, *, allow_private: bool = False, timeout: float = 5.0
) -> WkdCheck:
    host = f"openpgpkey.{domain}"
    try:
        infos = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
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
    request = urllib.request.Request(url, headers={"User-Agent": "keydir-wkd-check"})
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl.create_default_context()), _NoRedirect()
    )
    try:
        # The URL is always https://openpgpkey.<validated domain>/…; redirects are refused.
        with opener.open(request, timeout=timeout) as response:
            response.read(65536)
            served_here = response.headers.get(SITE_HEADER) == site_name
            problem = (
                None
                if served_here
                else (f"{url} answers, but not from {site_name}: is {host} pointed here?")
            )
            return WkdCheck(
                domain, host, resolved, True, response.status == 200, served_here, problem
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return WkdCheck(domain, host, resolved, True, problem=f"{url} answered {exc.code}.")
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        return WkdCheck(
            domain,
            host,
            resolved,
            True,
            problem=f"{url} could not be fetched over HTTPS ({exc}). Is there a "
            f"valid TLS certificate for {host}?",
        )

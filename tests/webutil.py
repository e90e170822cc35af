"""Submitting the site's forms as a browser would: with the CSRF cookie and field."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
import urllib.request
from typing import Any

from fastapi.testclient import TestClient

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def form(client: TestClient, **fields: str) -> dict[str, str]:
    """``fields`` plus the CSRF token of ``client``'s cookie (fetching a page sets it;
    it is `__Host-keydir_csrf` when the site's public URL is https)."""
    names = ("__Host-keydir_csrf", "keydir_csrf")
    if not any(name in client.cookies for name in names):
        client.get("/")
    token = next(client.cookies[name] for name in names if name in client.cookies)
    return {"csrf": token, **fields}


def post_form(base: str, page: str, action: str, **fields: str) -> Any:
    """GET ``page`` (which sets the cookie and carries the token), then POST ``action``."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with opener.open(base + page, timeout=30) as response:
        found = CSRF_FIELD.search(response.read().decode())
    assert found is not None, "no form on the page"
    data = urllib.parse.urlencode({"csrf": found.group(1), **fields}).encode()
    return opener.open(urllib.request.Request(base + action, data=data, method="POST"), timeout=30)

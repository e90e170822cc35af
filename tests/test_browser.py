"""A person's whole path through the pages, in a real browser (Debian's chromium, driven by
Playwright), against a real server process and a real SMTP server.

Screenshots of every page go to tests/artifacts/screenshots/ (not committed) for people to
look at.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import DATA
from tests.gpgutil import gnupg_home, import_key
from tests.mailutil import SmtpServer
from tests.serverutil import free_port, running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).parent / "artifacts" / "screenshots"
RITA = json.loads((DATA / "keys.json").read_text())["rsa_multi_uid.asc"][0]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium)",
)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def site(tmp_path: Path, smtp: SmtpServer) -> Iterator[str]:
    port = free_port()
    with running_server(
        tmp_path,
        tmp_path / "server.log",
        port=port,
        KEYDIR_DATABASE_URL=f"sqlite:///{tmp_path / 'site.sqlite3'}",
        KEYDIR_BASE_URL=f"http://127.0.0.1:{port}",
        KEYDIR_SMTP_HOST="127.0.0.1",
        KEYDIR_SMTP_PORT=str(smtp.port),
    ) as url:
        yield url


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def link_from_mail(smtp: SmtpServer, address: str, count: int) -> str:
    deadline = time.monotonic() + 60
    while len(smtp.inbox.to(address)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    messages = smtp.inbox.to(address)
    assert len(messages) == count, f"expected mail {count} to {address}"
    body = messages[-1].get_body(preferencelist=("plain",))
    assert body is not None
    return next(w for w in body.get_content().split() if w.startswith("http"))


def test_a_person_publishes_finds_downloads_and_withdraws_a_key(
    browser: Browser, site: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1000, "height": 800})
    page = context.new_page()

    page.goto(site + "/")
    assert page.get_by_role("heading", level=1).inner_text() == "Find an OpenPGP key"
    shot(page, "01-home")

    page.get_by_role("link", name="Upload", exact=True).click()
    page.get_by_label("Key file (.asc or binary)").set_input_files(str(DATA / "rsa_multi_uid.asc"))
    shot(page, "02-upload")
    page.get_by_role("button", name="Upload").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Key uploaded"
    assert RITA in page.locator("#fingerprint").inner_text()
    shot(page, "03-uploaded")

    page.get_by_role("button", name="Send me a confirmation mail (rita@example.org)").click()
    assert "confirmation mail sent" in page.content()
    shot(page, "04-mail-requested")

    page.goto(link_from_mail(smtp, "rita@example.org", 1))
    assert page.get_by_role("heading", level=1).inner_text() == "Confirm your address"
    shot(page, "05-confirm")
    page.get_by_role("button", name="Confirm and publish").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Address confirmed"
    shot(page, "06-confirmed")

    page.goto(site + "/")
    page.get_by_label("E-mail address, fingerprint or key ID").fill("rita@example.org")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Key found"
    assert "rita@example.net" not in page.content()
    shot(page, "07-key")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the key").click()
    downloaded = tmp_path / "downloaded.asc"
    download_info.value.save_as(downloaded)
    if shutil.which("gpg"):
        for home in gnupg_home(tmp_path / "gnupg"):
            keys = import_key(home, downloaded.read_bytes())
            assert [k.fingerprint for k in keys] == [RITA]
            assert keys[0].user_ids == ["Rita Rsa <rita@example.org>"]

    page.get_by_role("link", name="Manage").click()
    page.get_by_label("E-mail address").fill("rita@example.org")
    shot(page, "08-manage-request")
    page.get_by_role("button", name="Send me a link").click()
    assert "on its way" in page.content()
    shot(page, "09-manage-sent")
    page.goto(link_from_mail(smtp, "rita@example.org", 2))
    shot(page, "10-manage")
    page.get_by_role("button", name="Unpublish rita@example.org").click()
    assert "No key is published for this address any more" in page.content()
    shot(page, "11-unpublished")

    page.goto(site + "/")
    page.get_by_label("E-mail address, fingerprint or key ID").fill("rita@example.org")
    page.get_by_role("button", name="Search").click()
    assert "No key found." in page.content()
    shot(page, "12-not-found")

    page.goto(site + "/about")
    shot(page, "13-about")
    page.goto(site + "/privacy")
    shot(page, "14-privacy")
    phone = browser.new_context(viewport={"width": 375, "height": 700}, is_mobile=True)
    small = phone.new_page()
    small.goto(site + "/")
    assert small.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(small, "15-home-phone")
    phone.close()
    context.close()

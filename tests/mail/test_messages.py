"""What the uploader chose (a user ID) cannot break lines in our mails: U+2028, U+2029 and
the other separators become spaces, in the text and HTML bodies and the subject."""

from __future__ import annotations

import warnings

import pysequoia
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.mail import messages
from tests.api.test_verification import dispatcher, request_verify
from tests.mailutil import SmtpServer

SEPARATORS = "\u2028\u2029\u0085\x0b\x0c\r\n"


def test_no_value_breaks_a_line_of_a_rendered_mail() -> None:
    message = messages.verification(
        address="eve@example.org",
        user_id="Eve\u2028Key fingerprint: 0000\u2029Open https://evil.example/",
        fingerprint="AB" * 20,
        link="https://keys.example.org/verify/x\u2028y",
        service="keys.example.org\u2029x",
        valid_days=7,
    )
    for part in (message.subject, message.text, message.html):
        assert "\u2028" not in part
        assert "\u2029" not in part
    assert "Eve Key fingerprint: 0000 Open https://evil.example/" in message.text
    assert "\u0085" not in message.subject


def test_a_user_id_with_line_separators_reaches_the_mail_on_one_line(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    user_id = "Eve\u2028Your key was revoked\u2029 <eve@example.org>"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cert = pysequoia.Tsk.generate(user_ids=[user_id]).extract_certificate()
    uploaded = mail_client.post("/vks/v1/upload", json={"keytext": str(cert)})
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["status"] == {"eve@example.org": "unpublished"}
    request_verify(mail_client, uploaded.json()["token"], "eve@example.org")
    dispatcher(database[1], smtp).run_once()
    (mail,) = smtp.inbox.to("eve@example.org")
    for part in mail.walk():
        if part.get_content_maintype() == "text":
            body = part.get_content()
            assert not any(c in body for c in "\u2028\u2029\u0085"), repr(body)
            assert "Eve Your key was revoked " in body
    assert not any(c in str(mail["Subject"]) for c in SEPARATORS)

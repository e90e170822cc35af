"""The e-mail round trip against a real SMTP server, on both databases, read as a person would."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update

from service.db.models import AddressRow, CertRow, OutboxRow, TokenRow, utcnow
from service.db.session import make_sessionmaker
from service.mail.dispatcher import Dispatcher
from service.mail.senders import SmtpSender, build_email
from service.openpgp.armor import dearmor
from tests.conftest import read_data
from tests.gpgutil import import_key
from tests.mailutil import SmtpServer
from tests.webutil import form

RITA = ("rita@example.org", "rita.work@example.com", "rita@example.net")


def dispatcher(engine: Engine, smtp: SmtpServer) -> Dispatcher:
    return Dispatcher(
        make_sessionmaker(engine), SmtpSender("127.0.0.1", smtp.port), "keydir <k@example.org>"
    )


def upload(client: TestClient, name: str) -> dict[str, object]:
    response = client.post("/vks/v1/upload", json={"keytext": read_data(name).decode()})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def request_verify(client: TestClient, token: object, *addresses: str) -> dict[str, object]:
    response = client.post(
        "/vks/v1/request-verify",
        json={"token": token, "addresses": list(addresses), "locale": ["en_US"]},
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def confirm_from_mail(client: TestClient, smtp: SmtpServer, address: str) -> str:
    """Open the link of the latest mail to ``address`` as a person would: GET, then POST."""
    kind, token = smtp.inbox.link(smtp.inbox.to(address)[-1])
    assert kind == "verify"
    page = client.get(f"/verify/{token}")
    assert page.status_code == 200
    assert address in page.text
    assert f'action="/verify/{token}"' in page.text
    done = client.post(f"/verify/{token}", data=form(client))
    assert done.status_code == 200
    assert "confirmed" in done.text
    return token


def mailed_verify_token(
    client: TestClient, smtp: SmtpServer, engine: Engine, name: str, address: str
) -> str:
    """Upload a key, ask for a confirmation mail to ``address``, return the mailed token."""
    body = upload(client, name)
    request_verify(client, body["token"], address)
    dispatcher(engine, smtp).run_once()
    _, token = smtp.inbox.link(smtp.inbox.to(address)[-1])
    return token


def everything_served(client: TestClient, fpr: str, addresses: tuple[str, ...]) -> str:
    """Every response a client could get about this key, concatenated."""
    parts = [client.get(f"/vks/v1/by-fingerprint/{fpr}").text]
    parts.append(client.get(f"/vks/v1/by-keyid/{fpr[-16:]}").text)
    parts.extend(client.get(f"/vks/v1/by-email/{address}").text for address in addresses)
    return "\n".join(parts)


@pytest.mark.gpg
def test_full_round_trip_publishes_exactly_the_confirmed_addresses(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine], gnupghome: Path
) -> None:
    body = upload(mail_client, "rsa_multi_uid.asc")
    fpr = str(body["key_fpr"])
    assert body["status"] == dict.fromkeys(RITA, "unpublished")

    asked = request_verify(mail_client, body["token"], RITA[0], RITA[1])
    assert asked["status"] == {RITA[0]: "pending", RITA[1]: "pending", RITA[2]: "unpublished"}
    assert smtp.inbox.messages == []  # nothing leaves before the dispatcher runs
    assert dispatcher(database[1], smtp).run_once().sent == 2
    assert {m["To"] for m in smtp.inbox.messages} == {RITA[0], RITA[1]}
    mail = smtp.inbox.to(RITA[0])[0]
    assert RITA[0] in mail["Subject"]
    assert "keys.example.org" in mail["Subject"]
    assert mail.get_body(preferencelist=("html",)) is not None

    for address in RITA[:2]:
        confirm_from_mail(mail_client, smtp, address)

    for address in RITA[:2]:
        found = mail_client.get(f"/vks/v1/by-email/{address}")
        assert found.status_code == 200
        assert found.headers["content-disposition"] == f'attachment; filename="{fpr}.asc"'
    hidden = mail_client.get(f"/vks/v1/by-email/{RITA[2]}")
    assert hidden.status_code == 404
    assert RITA[2] not in hidden.text

    # The served key carries exactly the two confirmed user IDs, and gpg imports it.
    keys = import_key(gnupghome, mail_client.get(f"/vks/v1/by-fingerprint/{fpr}").content)
    assert [k.fingerprint for k in keys] == [fpr]
    assert sorted(keys[0].user_ids) == [
        "Rita Rsa <rita@example.org>",
        "Rita at Work <rita.work@example.com>",
    ]
    assert len(keys[0].subkeys) == 2
    # The third address is nowhere: not in any served key, not in any error.
    served = everything_served(mail_client, fpr, RITA)
    assert RITA[2] not in served
    assert b"rita@example.net" not in dearmor(
        mail_client.get(f"/vks/v1/by-fingerprint/{fpr}").content
    )


def test_smtp_down_then_back_delivers_exactly_once(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    smtp.stop()
    body = upload(mail_client, "ed25519.asc")
    asked = request_verify(mail_client, body["token"], "eddie@example.org")
    assert asked["status"]["eddie@example.org"] == "pending"  # type: ignore[index]
    worker = dispatcher(database[1], smtp)
    report = worker.run_once()
    assert (report.sent, report.failed) == (0, 1)
    with database[1].connect() as conn:
        row = conn.execute(select(OutboxRow)).one()
    assert row.attempts == 1
    assert row.sent_at is None
    assert row.next_attempt_at > utcnow()  # backing off
    smtp.start()
    assert worker.run_once().sent == 0  # not due yet
    later = utcnow() + timedelta(hours=2)
    assert worker.run_once(now=later).sent == 1
    assert worker.run_once(now=later + timedelta(hours=2)).sent == 0
    assert len(smtp.inbox.to("eddie@example.org")) == 1


class CrashAfter:
    """Delivers ``good`` mails through SMTP, then dies as a killed process would."""

    def __init__(self, smtp: SmtpServer, good: int) -> None:
        self.real = SmtpSender("127.0.0.1", smtp.port)
        self.left = good

    def send(self, message: object) -> None:
        if self.left == 0:
            raise SystemExit("worker killed")
        self.left -= 1
        self.real.send(message)  # type: ignore[arg-type]


def test_crash_in_the_middle_of_a_batch_sends_nothing_twice(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    body = upload(mail_client, "rsa_multi_uid.asc")
    request_verify(mail_client, body["token"], *RITA)
    sessions = make_sessionmaker(database[1])
    crashing = Dispatcher(sessions, CrashAfter(smtp, 1), "k@example.org")
    with pytest.raises(SystemExit):
        crashing.run_once()
    assert len(smtp.inbox.messages) == 1
    survivor = dispatcher(database[1], smtp)
    assert survivor.run_once().sent == 0  # the dead worker's lease still holds the rest
    after_lease = utcnow() + timedelta(minutes=6)
    assert survivor.run_once(now=after_lease).sent == 2
    assert sorted(m["To"] for m in smtp.inbox.messages) == sorted(RITA)


def test_concurrent_dispatchers_send_each_mail_once(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    for name in ("rsa_multi_uid.asc", "ed25519.asc", "nistp256.asc", "dsa_elg.asc"):
        body = upload(mail_client, name)
        status = body["status"]
        assert isinstance(status, dict)
        request_verify(mail_client, body["token"], *status)
    with database[1].connect() as conn:
        queued = conn.scalar(select(func.count()).select_from(OutboxRow))
    assert queued == 7  # 3 + 2 + 1 + 1 addresses
    workers = [dispatcher(database[1], smtp) for _ in range(3)]
    errors: list[BaseException] = []

    def run(worker: Dispatcher) -> None:
        try:
            worker.run_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(smtp.inbox.messages) == 7
    assert len({m["Message-ID"] for m in smtp.inbox.messages}) == 7


def test_rate_limit_one_mail_per_address(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    body = upload(mail_client, "ed25519.asc")
    request_verify(mail_client, body["token"], "eddie@example.org")
    again = request_verify(mail_client, body["token"], "eddie@example.org")
    assert again["status"]["eddie@example.org"] == "pending"  # type: ignore[index]
    assert dispatcher(database[1], smtp).run_once().sent == 1


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"token": "nope", "addresses": ["eddie@example.org"]}, "unknown or has expired"),
        ({"addresses": ["x@example.org"]}, "token"),
    ],
)
def test_request_verify_errors_are_json(
    mail_client: TestClient, payload: dict[str, object], fragment: str
) -> None:
    response = mail_client.post("/vks/v1/request-verify", json=payload)
    assert response.status_code in (400, 422)
    assert fragment in response.json()["error"]


def test_address_not_on_key_is_refused(mail_client: TestClient) -> None:
    body = upload(mail_client, "ed25519.asc")
    response = mail_client.post(
        "/vks/v1/request-verify",
        json={"token": body["token"], "addresses": ["someone@example.org"]},
    )
    assert response.status_code == 400
    assert "not on the key you uploaded" in response.json()["error"]


def test_tokens_used_twice_expired_or_for_another_purpose_change_nothing(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    body = upload(mail_client, "rsa_multi_uid.asc")
    fpr = body["key_fpr"]
    request_verify(mail_client, body["token"], *RITA)
    dispatcher(database[1], smtp).run_once()
    used = confirm_from_mail(mail_client, smtp, RITA[0])
    before = mail_client.get(f"/vks/v1/by-fingerprint/{fpr}").text

    again = mail_client.post(f"/verify/{used}", data=form(mail_client))
    assert again.status_code == 409
    assert "already been used" in again.text

    _, expiring = smtp.inbox.link(smtp.inbox.to(RITA[1])[0])
    with database[1].begin() as conn:
        conn.execute(
            update(TokenRow)
            .where(TokenRow.address == RITA[1])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = mail_client.post(f"/verify/{expiring}", data=form(mail_client))
    assert expired.status_code == 410
    assert "expired" in expired.text

    # The upload token is not a verification token.
    assert mail_client.post(f"/verify/{body['token']}", data=form(mail_client)).status_code == 404
    assert mail_client.post("/verify/not-a-token", data=form(mail_client)).status_code == 404

    assert mail_client.get(f"/vks/v1/by-fingerprint/{fpr}").text == before
    assert mail_client.get(f"/vks/v1/by-email/{RITA[1]}").status_code == 404


def test_many_clicks_at_once_publish_once(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    token = mailed_verify_token(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    codes: list[int] = []
    fields = form(mail_client)

    def click() -> None:
        codes.append(mail_client.post(f"/verify/{token}", data=fields).status_code)

    threads = [threading.Thread(target=click) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(codes) == [200] + [409] * 5


def test_get_of_link_changes_nothing(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    token = mailed_verify_token(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    for _ in range(3):
        assert mail_client.get(f"/verify/{token}").status_code == 200
    assert mail_client.get("/vks/v1/by-email/eddie@example.org").status_code == 404


@pytest.mark.gpg
def test_second_key_takes_the_address_first_keeps_its_user_id_until_unpublished(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine], gnupghome: Path
) -> None:
    worker = dispatcher(database[1], smtp)
    first = upload(mail_client, "with_certification.asc")
    request_verify(mail_client, first["token"], "carl@example.org")
    worker.run_once()
    confirm_from_mail(mail_client, smtp, "carl@example.org")
    assert (
        mail_client.get("/vks/v1/by-email/carl@example.org")
        .headers["content-disposition"]
        .endswith(f'{first["key_fpr"]}.asc"')
    )

    # Another key with the same address, verified later, wins by-email.
    second = upload(mail_client, "carl_second.asc")
    assert second["key_fpr"] != first["key_fpr"]
    with database[1].begin() as conn:  # let the rate limit window pass
        conn.execute(update(OutboxRow).values(created_at=utcnow() - timedelta(hours=1)))
    request_verify(mail_client, second["token"], "carl@example.org")
    worker.run_once()
    confirm_from_mail(mail_client, smtp, "carl@example.org")
    by_email = mail_client.get("/vks/v1/by-email/carl@example.org")
    assert by_email.headers["content-disposition"].endswith(f'{second["key_fpr"]}.asc"')

    # The first key's fingerprint lookup still carries the user ID (old signatures verify).
    old = import_key(
        gnupghome, mail_client.get(f"/vks/v1/by-fingerprint/{first['key_fpr']}").content
    )
    assert old[0].user_ids == ["Carl <carl@example.org>"]


def publish(client: TestClient, smtp: SmtpServer, engine: Engine, name: str, address: str) -> str:
    body = upload(client, name)
    request_verify(client, body["token"], address)
    dispatcher(engine, smtp).run_once()
    confirm_from_mail(client, smtp, address)
    return str(body["key_fpr"])


@pytest.mark.gpg
def test_revocation_of_published_key_is_served_at_once_and_gpg_imports_it(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine], gnupghome: Path
) -> None:
    fpr = publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    first = mail_client.get(f"/vks/v1/by-fingerprint/{fpr}")
    upload(mail_client, "ed25519_revocation_only.asc")
    served = mail_client.get(f"/vks/v1/by-fingerprint/{fpr}")
    assert served.headers["etag"] != first.headers["etag"]
    keys = import_key(gnupghome, served.content)
    assert keys[0].revoked
    assert keys[0].user_ids == ["Eddie <eddie@example.org>"]
    # by-email serves the revoked key too, so that clients learn of the revocation.
    assert mail_client.get("/vks/v1/by-email/eddie@example.org").text == served.text


def test_manage_unpublish_hides_the_address_at_once(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    fpr = publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    asked = mail_client.post("/manage", data=form(mail_client, address="Eddie@Example.org"))
    unknown = mail_client.post("/manage", data=form(mail_client, address="nobody@example.org"))
    assert asked.status_code == unknown.status_code == 200
    # The page never tells whether an address is known.
    assert asked.text.replace("Eddie@Example.org", "X") == unknown.text.replace(
        "nobody@example.org", "X"
    )
    dispatcher(database[1], smtp).run_once()
    assert smtp.inbox.to("nobody@example.org") == []
    kind, token = smtp.inbox.link(smtp.inbox.to("eddie@example.org")[-1])
    assert kind == "manage"
    page = mail_client.get(f"/manage/{token}")
    assert page.status_code == 200
    assert fpr in page.text
    assert "eddie@example.org" in page.text
    # The key's unconfirmed address is not shown, even to the owner of a confirmed one.
    assert "eddie2@example.org" not in page.text
    elsewhere = mail_client.post(
        f"/manage/{token}/unpublish",
        data=form(mail_client, fingerprint="AB" * 20, address="eddie@example.org"),
    )
    assert elsewhere.status_code == 200
    assert mail_client.get("/vks/v1/by-email/eddie@example.org").status_code == 200
    done = mail_client.post(
        f"/manage/{token}/unpublish",
        data=form(mail_client, fingerprint=fpr, address="eddie@example.org"),
    )
    assert done.status_code == 200  # after the redirect back to the manage page
    assert mail_client.get("/vks/v1/by-email/eddie@example.org").status_code == 404
    assert b"eddie@example.org" not in dearmor(
        mail_client.get(f"/vks/v1/by-fingerprint/{fpr}").content
    )


def test_manage_delete_identity_removes_every_user_id(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    fpr = publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    mail_client.post("/manage", data=form(mail_client, address="eddie@example.org"))
    dispatcher(database[1], smtp).run_once()
    _, token = smtp.inbox.link(smtp.inbox.to("eddie@example.org")[-1])
    assert (
        mail_client.post(
            f"/manage/{token}/delete", data=form(mail_client, fingerprint=fpr)
        ).status_code
        == 200
    )
    assert mail_client.get("/vks/v1/by-email/eddie@example.org").status_code == 404
    served = mail_client.get(f"/vks/v1/by-fingerprint/{fpr}")
    assert served.status_code == 200
    assert b"Eddie" not in dearmor(served.content)
    with database[1].connect() as conn:
        assert conn.scalar(select(func.count()).select_from(AddressRow)) == 0
        stored = conn.scalar(select(CertRow.full_data))
    assert stored is not None
    assert b"Eddie" not in stored


def test_mail_headers_cannot_be_injected() -> None:
    with pytest.raises(ValueError, match=r"linefeed|newline|header"):
        build_email(
            sender="k@example.org",
            recipient="a@example.org",
            subject="hi\r\nBcc: evil@example.org",
            text="x",
            html=None,
            message_id="<1@example.org>",
        )


@pytest.mark.gpg
@pytest.mark.parametrize(
    "tampered", ["foreign_subkey.asc", "damaged_subkey.asc", "garbage_sig.asc"]
)
def test_tampered_uploads_never_reach_a_gpg_import(
    mail_client: TestClient,
    smtp: SmtpServer,
    database: tuple[str, Engine],
    gnupghome: Path,
    tampered: str,
) -> None:
    fpr = publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    clean = mail_client.get(f"/vks/v1/by-fingerprint/{fpr}").content
    upload(mail_client, tampered)
    served = mail_client.get(f"/vks/v1/by-fingerprint/{fpr}").content
    assert served == clean
    keys = import_key(gnupghome, served)
    assert [k.fingerprint for k in keys] == [fpr]
    assert keys[0].user_ids == ["Eddie <eddie@example.org>"]
    (gnupghome.parent / "certifier").mkdir(mode=0o700)
    foreign = import_key(gnupghome.parent / "certifier", read_data("certifier.asc"))
    assert not set(keys[0].subkeys) & set(foreign[0].subkeys)
    assert len(keys[0].subkeys) == 2


@pytest.mark.gpg
def test_subkey_key_ids_fetch_an_importable_key(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine], gnupghome: Path
) -> None:
    fpr = publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    home = gnupghome.parent / "first"
    home.mkdir(mode=0o700)
    subkeys = import_key(home, mail_client.get(f"/vks/v1/by-keyid/{fpr[-16:]}").content)[0].subkeys
    assert len(subkeys) == 2
    for subkey in subkeys:
        keys = import_key(gnupghome, mail_client.get(f"/vks/v1/by-keyid/{subkey[-16:]}").content)
        assert [k.fingerprint for k in keys] == [fpr]
        assert sorted(keys[0].subkeys) == sorted(subkeys)

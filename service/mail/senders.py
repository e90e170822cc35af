"""Where mails go: an SMTP server, or the console when none is configured."""

from __future__ import annotations

import smtplib
import ssl
import sys
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol, TextIO

from service.settings import Settings, SmtpTls


class SendFailed(Exception):
    """The mail could not be handed over; it stays in the outbox and is tried again, unless
    ``permanent`` (the server refused the recipient for good).

    Its text is the error class and the SMTP code only, never the server's words: a reply
    such as `550 <someone@example.org>: unknown user` quotes an address whose owner may
    never have confirmed anything, and this text goes to the log and the outbox row.
    """

    def __init__(self, description: str, *, permanent: bool = False) -> None:
        super().__init__(description)
        self.permanent = permanent


def describe(exc: BaseException) -> str:
    """The class of an error and its SMTP code(s), nothing the peer or the input chose."""
    name = type(exc).__name__
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({str(code) for code, _reply in exc.recipients.values()})
        return " ".join([name, *codes])
    code = getattr(exc, "smtp_code", None)
    if isinstance(code, int):
        return f"{name} {code}"
    return name


class Sender(Protocol):
    def send(self, message: EmailMessage) -> None: ...


def build_email(
    *, sender: str, recipient: str, subject: str, text: str, html: str | None, message_id: str
) -> EmailMessage:
    """A MIME mail; EmailMessage refuses line breaks in headers, so none can be injected."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = subject
    mail["Date"] = formatdate(localtime=False)
    # The same Message-ID on every attempt lets a receiving server drop a duplicate.
    mail["Message-ID"] = message_id
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(text)
    if html is not None:
        mail.add_alternative(html, subtype="html")
    return mail


class SmtpSender:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: SmtpTls = SmtpTls.NONE,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.username, self.password, self.timeout = username, password, timeout
        self.ssl_context = ssl_context

    def send(self, message: EmailMessage) -> None:
        try:
            # The server's certificate is checked against the system's trust store.
            context = self.ssl_context or ssl.create_default_context()
            client: smtplib.SMTP
            if self.tls == SmtpTls.TLS:
                client = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                if self.tls == SmtpTls.STARTTLS:
                    client.starttls(context=context)
                if self.username:
                    client.login(self.username, self.password or "")
                client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _reply in exc.recipients.values()]
            permanent = bool(codes) and all(500 <= code < 600 for code in codes)
            # Not chained: the refused exception's text names the recipient.
            raise SendFailed(describe(exc), permanent=permanent) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise SendFailed(describe(exc)) from None


class ConsoleSender:
    """For a laptop with no mail server: the whole mail, link included, on the console."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def send(self, message: EmailMessage) -> None:
        stream = self.stream or sys.stdout
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        stream.write(
            "----- mail (no KEYDIR_SMTP_HOST set, so it is shown here) -----\n"
            f"To: {message['To']}\nSubject: {message['Subject']}\n\n{text}"
            "----- end of mail -----\n"
        )
        stream.flush()


def sender_from_settings(settings: Settings) -> Sender:
    if not settings.smtp_host:
        return ConsoleSender()
    return SmtpSender(
        settings.smtp_host,
        settings.smtp_port,
        tls=settings.smtp_tls,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
    )

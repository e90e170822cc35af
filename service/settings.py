"""Settings from the environment (prefix ``KEYDIR_``). Nothing is read at import time."""

from __future__ import annotations

import ipaddress
from enum import StrEnum

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.logs import LogFormat


class SmtpTls(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYDIR_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///keydir.sqlite3",
        description=(
            "SQLAlchemy URL. SQLite (a file) by default; postgresql+psycopg://… in production."
        ),
    )
    base_url: str = Field(
        default="http://localhost:8080",
        description="Public URL of this service; verification links in mails start with it.",
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP server for mails. Unset: mails are printed to the log."
    )
    smtp_port: int = Field(default=25, description="SMTP port.")
    smtp_tls: SmtpTls = Field(default=SmtpTls.NONE, description="none, starttls or tls.")
    smtp_username: str | None = Field(default=None, description="SMTP login user, if any.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP login password.")
    mail_from: str = Field(
        default="keydir <keydir@localhost>", description="From: address of the mails we send."
    )
    max_upload_bytes: int = Field(
        default=1024 * 1024, description="Largest accepted request body, in bytes (413 above)."
    )
    max_keys_per_upload: int = Field(
        default=100, description="Most keys accepted in one upload (HKP add may carry several)."
    )
    max_packets_per_key: int = Field(
        default=50_000, description="Most OpenPGP packets read from one upload."
    )
    parse_workers: int = Field(
        default=2,
        description="Worker processes that parse uploads (0: parse in the server process).",
    )
    parse_timeout_seconds: float = Field(
        default=10.0,
        description=(
            "Longest time one upload may run in a parse worker, from its start there; "
            "it waits at most twice this for a free worker."
        ),
    )
    parse_memory_bytes: int = Field(
        default=1024 * 1024 * 1024,
        description="Address-space limit of each parsing worker (0: no limit).",
    )
    max_user_ids_per_key: int = Field(
        default=100, description="Most user IDs one key may carry (its own, verified ones)."
    )
    max_subkeys_per_key: int = Field(
        default=100, description="Most subkeys one key may carry (bound by the key itself)."
    )
    max_user_id_bytes: int = Field(default=1024, description="Longest accepted user ID.")
    rate_uploads_per_hour: int = Field(
        default=60, description="Uploads per client address per hour (VKS, HKP, web); 0: off."
    )
    rate_mail_requests_per_hour: int = Field(
        default=30,
        description=(
            "Mails a client's requests may cause per hour: each confirmation mail "
            "(request-verify, the page's button, HKP offers) and each manage request; 0: off."
        ),
    )
    rate_address_lookups_per_minute: int = Field(
        default=600,
        description="Lookups by address (VKS by-email, HKP, WKD, search) per client per minute.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Keep rate-limit counters in Redis (redis://host:6379/0), not the database.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "Addresses or networks of reverse proxies whose X-Forwarded-For is believed "
            '(JSON list, e.g. ["127.0.0.1", "10.0.0.0/8"]).'
        ),
    )
    upload_token_hours: int = Field(
        default=48, description="How long an upload token (for request-verify) works."
    )
    verify_token_days: int = Field(
        default=7, description="How long a link in a confirmation mail works."
    )
    manage_token_hours: int = Field(
        default=24, description="How long a link in a manage mail works."
    )
    mail_interval_seconds: int = Field(
        default=600,
        description="At most one confirmation (or manage) mail per address in this interval.",
    )
    retention_days: int = Field(
        default=14,
        ge=0,
        description=(
            "Days after which mails sent or given up (they hold working links) and links "
            "used or expired are deleted by the mail dispatcher; 0 keeps them."
        ),
    )
    hkp_offer_verification: bool = Field(
        default=True,
        description=(
            "Mail a confirmation link to each address of a brand-new key uploaded over HKP "
            "(`gpg --send-keys`), counted against the client's mail limit."
        ),
    )
    hkp_offers_per_request: int = Field(
        default=10,
        ge=0,
        description="Most confirmation offers one HKP upload may mail; 0: no cap.",
    )
    rate_hkp_offers_per_domain_per_hour: int = Field(
        default=100,
        ge=0,
        description=(
            "Most HKP confirmation offers mailed to one recipient domain per hour, all clients "
            "together; 0: off."
        ),
    )
    wkd_domains: list[str] = Field(
        default_factory=list,
        description=(
            'Domains whose WKD this server answers (JSON list, e.g. ["example.org"]). '
            "Empty: every domain with a confirmed address."
        ),
    )
    rate_wkd_checks_per_hour: int = Field(
        default=30, description="WKD domain checks (/wkd/check) per client per hour; 0: off."
    )
    wkd_check_timeout_seconds: float = Field(
        default=10.0,
        description=(
            "Longest time one /wkd/check may take, resolving, connecting and reading together."
        ),
    )
    wkd_check_allow_private: bool = Field(
        default=False,
        description=(
            "Let /wkd/check contact openpgpkey.<domain> even when it resolves to a private "
            "or loopback address (for tests and closed networks)."
        ),
    )
    dispatch_mail: bool = Field(
        default=True,
        description=(
            "Send queued mails from each server process. Turn off when separate "
            "`keydir worker` processes send them."
        ),
    )
    lookup_database_url: str | None = Field(
        default=None,
        description=(
            "Where key lookups read (a PostgreSQL streaming replica of the main database); "
            "unset: the main database."
        ),
    )
    lookup_fast_path: bool = Field(
        default=True,
        description=(
            "Answer key lookups (VKS, HKP get, WKD) before the web framework's routing. "
            "The answers are the same; off only to compare."
        ),
    )
    lookup_cache_seconds: float = Field(
        default=0.0,
        description=(
            "Keep lookup answers in each server process for this many seconds (0: off). "
            "Clients may then see an update this much later than max-age=60 allows."
        ),
    )
    lookup_cache_entries: int = Field(
        default=10_000, description="Most answers kept by that cache in each process."
    )
    auto_migrate: bool | None = Field(
        default=None,
        description=(
            "Apply database migrations when the server starts. Default: yes for SQLite, "
            "no for other databases (run `keydir migrate`)."
        ),
    )
    metrics_allow: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description=(
            "Networks that may read /metrics (JSON list); others get 403. Default: loopback "
            'only. `["0.0.0.0/0", "::/0"]` makes the metrics public; `[]` closes them to all.'
        ),
    )
    log_format: LogFormat = Field(
        default=LogFormat.TEXT,
        description="Log lines as plain text (text) or one JSON object per line (json).",
    )
    tls_proxy: bool = Field(
        default=False,
        description=(
            "A TLS-terminating proxy is in front: send Strict-Transport-Security as when "
            "`keydir serve --tls-cert` serves HTTPS itself."
        ),
    )

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"{network!r} is not an IP network (e.g. 10.0.0.0/8)") from exc
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def migrate_on_start(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

"""The mails keydir sends, rendered from templates in the reader's language.

Only normalised addresses (which cannot hold a line break) go into headers; user ID text,
which the uploader chose, appears only in bodies, escaped in HTML. Every value put into a
template is one line: control characters and line or paragraph separators (U+2028, U+2029,
U+0085, which plain-text mail readers break lines at) become spaces, so no value can start
a line of its own that reads as ours.
"""

from __future__ import annotations

import gettext
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"
LOCALES = Path(__file__).parents[1] / "locale"
DEFAULT_LOCALE = "en"


@dataclass(frozen=True, slots=True)
class Message:
    kind: str
    recipient: str
    subject: str
    text: str
    html: str


def _environment(locales: list[str]) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        keep_trailing_newline=True,
    )
    translations = gettext.translation(
        "keydir", localedir=LOCALES, languages=[*locales, DEFAULT_LOCALE], fallback=True
    )
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    return env


def _normal_locales(locales: list[str] | None) -> list[str]:
    """`de-CH` -> `de_CH`; anything odd is dropped (it only picks a catalogue)."""
    result = []
    for locale in locales or []:
        cleaned = locale.strip().replace("-", "_")
        if cleaned and len(cleaned) <= 16 and cleaned.replace("_", "").isalnum():
            result.append(cleaned)
    return result


def _one_line(value: object) -> object:
    if not isinstance(value, str):
        return value
    return "".join(
        " " if c.isspace() or unicodedata.category(c).startswith("C") else c for c in value
    )


def _render(kind: str, recipient: str, locales: list[str] | None, **values: object) -> Message:
    env = _environment(_normal_locales(locales))
    context = {name: _one_line(value) for name, value in values.items()}
    subject = env.get_template(f"{kind}.subject.txt").render(**context).strip()
    return Message(
        kind=kind,
        recipient=recipient,
        subject=" ".join(subject.split()),
        text=env.get_template(f"{kind}.txt").render(**context),
        html=env.get_template(f"{kind}.html").render(**context),
    )


def verification(
    *,
    address: str,
    user_id: str,
    fingerprint: str,
    link: str,
    service: str,
    valid_days: int,
    locales: list[str] | None = None,
) -> Message:
    return _render(
        "verify",
        address,
        locales,
        address=address,
        user_id=user_id,
        fingerprint=fingerprint,
        link=link,
        service=service,
        valid_days=valid_days,
    )


def manage_link(
    *,
    address: str,
    fingerprint: str,
    link: str,
    service: str,
    valid_hours: int,
    locales: list[str] | None = None,
) -> Message:
    return _render(
        "manage",
        address,
        locales,
        address=address,
        fingerprint=fingerprint,
        link=link,
        service=service,
        valid_hours=valid_hours,
    )

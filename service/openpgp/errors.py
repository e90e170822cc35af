"""Errors of the OpenPGP layer. Each carries a sentence a person can act on.

The engine (pysequoia) raises bare RuntimeErrors; nothing outside this package ever sees one.
"""

from __future__ import annotations


class KeyRejected(Exception):
    """Base class: the input is not a public key we can accept. ``str(exc)`` is for people."""

    default = "This is not an OpenPGP public key we can accept."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default)

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidArmor(KeyRejected):
    default = "The armored text is damaged."


class MalformedKey(KeyRejected):
    default = "The data is not a well-formed OpenPGP key."


class NotAPublicKey(KeyRejected):
    default = "This is OpenPGP data, but not a public key (it looks like a message or a signature)."


class SecretKeyError(KeyRejected):
    default = (
        "This is a secret (private) key. Never share it: upload only your public key, "
        "for example the output of `gpg --export --armor YOUR-FINGERPRINT`."
    )


class UnsupportedKey(KeyRejected):
    default = "This key uses a version or algorithm that keydir does not support."


class NoValidSelfSignature(KeyRejected):
    default = (
        "This key has no valid self-signature on any user ID or on the key itself, "
        "so nobody can tell what it is for."
    )


class WeakSelfSignatures(NoValidSelfSignature):
    default = (
        "This key's self-signatures all use the SHA-1 hash, which is no longer considered "
        "safe. Refresh them with a current GnuPG, for example "
        "`gpg --quick-set-expire YOUR-FINGERPRINT 2y` (and the same for each subkey with "
        "`gpg --quick-set-expire YOUR-FINGERPRINT 2y '*'`), then upload the key again."
    )


class TooManyKeys(KeyRejected):
    default = "The upload holds more keys than allowed at once."


class KeyTooLarge(KeyRejected):
    default = "This key is larger than this server accepts."

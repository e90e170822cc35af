"""The OpenPGP layer: bytes in, value objects and bytes out. The only user of pysequoia.

Nothing here touches the database, HTTP or settings.
"""

from service.openpgp.addresses import InvalidAddress, address_of_user_id, normalize_address
from service.openpgp.armor import armor_public_key
from service.openpgp.cert import (
    Certificate,
    KeyLimits,
    ParsedUpload,
    Subkey,
    UserId,
    attach_signatures,
    enforce_limits,
    load,
    merge,
    read_upload,
    signature_issuers,
)
from service.openpgp.errors import (
    InvalidArmor,
    KeyRejected,
    KeyTooLarge,
    MalformedKey,
    NotAPublicKey,
    NoValidSelfSignature,
    SecretKeyError,
    TooManyKeys,
    UnsupportedKey,
    WeakSelfSignatures,
)
from service.openpgp.stream import primary_fingerprint

__all__ = [
    "Certificate",
    "InvalidAddress",
    "InvalidArmor",
    "KeyLimits",
    "KeyRejected",
    "KeyTooLarge",
    "MalformedKey",
    "NoValidSelfSignature",
    "NotAPublicKey",
    "ParsedUpload",
    "SecretKeyError",
    "Subkey",
    "TooManyKeys",
    "UnsupportedKey",
    "UserId",
    "WeakSelfSignatures",
    "address_of_user_id",
    "armor_public_key",
    "attach_signatures",
    "enforce_limits",
    "load",
    "merge",
    "normalize_address",
    "primary_fingerprint",
    "read_upload",
    "signature_issuers",
]

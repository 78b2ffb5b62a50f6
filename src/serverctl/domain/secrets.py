"""Enrolment secrets, API tokens, session ids and operator passwords.

Secrets are shown once and kept only as hashes: SHA-256 for high-entropy random secrets (a fast
hash is right for them and keeps the heartbeat lookup a dict access), argon2 for passwords.
"""

from __future__ import annotations

import hashlib
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ENROLMENT_SECRET_LENGTH = 48
_ALPHABET = string.ascii_letters + string.digits
API_TOKEN_PREFIX = "sct_"

_hasher = PasswordHasher()


def random_string(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_enrolment_secret() -> str:
    return random_string(ENROLMENT_SECRET_LENGTH)


def new_api_token() -> str:
    return API_TOKEN_PREFIX + random_string(40)


def new_password() -> str:
    return random_string(20)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# Compared against when a login names an unknown user, so both paths cost the same time.
DUMMY_PASSWORD_HASH = hash_password(random_string(16))

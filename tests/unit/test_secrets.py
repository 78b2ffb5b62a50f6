import hashlib
import string

from serverctl.domain import secrets


def test_enrolment_secret_is_48_random_alphanumerics():
    first, second = secrets.new_enrolment_secret(), secrets.new_enrolment_secret()
    assert len(first) == 48
    assert set(first) <= set(string.ascii_letters + string.digits)
    assert first != second


def test_secret_hash_is_sha256_hex_and_not_the_secret():
    secret = secrets.new_enrolment_secret()
    digest = secrets.hash_secret(secret)
    assert digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in digest


def test_api_tokens_are_prefixed_and_unique():
    tokens = {secrets.new_api_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(t.startswith("sct_") and len(t) == 44 for t in tokens)


def test_password_hash_is_argon2_and_verifies_only_the_right_password():
    stored = secrets.hash_password("correct horse battery")
    assert stored.startswith("$argon2")
    assert secrets.verify_password(stored, "correct horse battery")
    assert not secrets.verify_password(stored, "wrong password")
    assert not secrets.verify_password("not-a-hash", "anything")

"""Encryption at rest for provider credentials (Fernet: AES-128-CBC with HMAC-SHA256).

The key comes from `SERVERCTL_SECRET_KEY` (a Fernet key: 32 url-safe base64 bytes) or from
`<data_dir>/secret.key`, created 0600 on first start. Losing the key makes stored credentials
unreadable; they must then be entered again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from serverctl.errors import ServerCTLError

KEY_FILE_NAME = "secret.key"


class SecretBoxError(ServerCTLError):
    status_code = 500


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise SecretBoxError(
                "SERVERCTL_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes); "
                "make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from exc

    @classmethod
    def from_key_or_file(cls, key: str | None, data_dir: Path) -> SecretBox:
        if key:
            return cls(key.encode("ascii"))
        return cls(load_or_create_key_file(data_dir / KEY_FILE_NAME))

    def encrypt_json(self, value: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(value, sort_keys=True).encode()).decode("ascii")

    def decrypt_json(self, token: str) -> dict[str, Any]:
        try:
            data = self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken as exc:
            raise SecretBoxError(
                "stored credentials cannot be decrypted with this secret key "
                "(SERVERCTL_SECRET_KEY or secret.key changed); enter them again"
            ) from exc
        value = json.loads(data)
        if not isinstance(value, dict):
            raise SecretBoxError("stored credentials are not a JSON object")
        return value


def load_or_create_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # O_EXCL: two processes starting together must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    return key

"""Secrets at rest (container registry passwords, later other credentials): Fernet
(AES-128-CBC with HMAC-SHA256), with a key from FOGLINE_SECRET_KEY or a key file in the data dir
that only its owner may read. Platforms sharing one database must share the key."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from fogline.domain.errors import ConfigurationError

KEY_FILE = "secret.key"


class SecretBox:
    def __init__(self, key: bytes | str) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise ConfigurationError(
                "the secret key is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None

    @classmethod
    def for_platform(cls, data_dir: Path, configured: str | None) -> SecretBox:
        if configured:
            return cls(configured)
        path = data_dir / KEY_FILE
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigurationError(
                "a stored secret cannot be decrypted with this platform's secret key"
            ) from None

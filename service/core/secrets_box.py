"""Encryption of secrets that must be read back (webhook signing secrets), DESIGN §8."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    """Fernet encryption keyed by ``TUNELINE_SECRET_KEY``."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise RuntimeError(
                "a stored secret cannot be decrypted: TUNELINE_SECRET_KEY changed?"
            ) from None

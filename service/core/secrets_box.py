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
            raise RuntimeError("a stored secret cannot be decrypted: TUNELINE_SECRET_KEY changed?") from None


def box_for(secret_key: str, env: str) -> SecretBox:
    """The box for ``TUNELINE_SECRET_KEY``; outside production a missing key gets an ephemeral one."""
    if secret_key:
        return SecretBox(secret_key)
    if env == "production":  # pragma: no cover - Settings refuses to start like this
        raise RuntimeError("TUNELINE_SECRET_KEY is required in production")
    import logging

    logging.getLogger("tuneline").warning(
        "TUNELINE_SECRET_KEY is not set: using an ephemeral key (stored secrets will not survive a restart)"
    )
    return SecretBox(Fernet.generate_key().decode())

"""Secrets: the encrypted ``secrets`` table and the one resolver of credential references.

Wherever configuration takes a credential (a connector's token, a channel's password) it takes a
*reference*, never the value: ``env:NAME`` reads the environment variable ``NAME``; ``secret:NAME`` reads
the secret ``NAME`` that ``crewline secrets set NAME`` stored. :class:`Credentials` is the only code that
turns a reference into a value, and it hands back a :class:`SecretValue` whose ``repr`` and ``str`` show
``'***'``, so a value that strays into a log line, an f-string or an exception shows nothing. Call
:meth:`SecretValue.reveal` at the one place the value goes on the wire.

Values are encrypted at rest with AES-GCM (the secret's name is the associated data, so a row copied under
another name does not decrypt). The key is 32 bytes, urlsafe base64, from ``CREWLINE_SECRETS_KEY`` or the
file named by ``[secrets] key_file`` (kept outside the database; ``crewline secrets keygen`` makes one).
Without a key, ``secret:`` references are refused with a message saying how to give one.

Rotation without a restart: each row carries a ``version`` bumped by every ``set``. :meth:`Credentials.resolve`
reads the row (one primary-key lookup) on every call and decrypts only when the version changed, so a
connector that resolves its reference on each use picks up a new value on its next call.

This module sits just above ``store/`` (it imports the store, errors and config only) so that models,
alert channels and connectors can all resolve references through it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings, shown_path
from .errors import ConfigError, InvalidInput
from .store.database import Conn, Database
from .store.migrations import Migration

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_VARIABLE",
    "MIGRATIONS",
    "Credentials",
    "SecretInfo",
    "SecretStore",
    "SecretValue",
    "check_reference",
    "new_key",
    "secrets_key",
]

KEY_VARIABLE = "CREWLINE_SECRETS_KEY"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
_NONCE = 12

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "secrets",
        (
            """CREATE TABLE secrets (
                name TEXT PRIMARY KEY,
                nonce {blob} NOT NULL,
                ciphertext {blob} NOT NULL,
                version INTEGER NOT NULL,
                created_at {real} NOT NULL,
                updated_at {real} NOT NULL
            )""",
        ),
    ),
)


class SecretValue:
    """A credential's value. It never shows itself: ``repr``/``str``/``format`` give ``'***'``."""

    __slots__ = ("_value", "version")

    def __init__(self, value: str, version: int = 0) -> None:
        self._value = value
        self.version = version  # the stored row's version (0 for the environment)

    def reveal(self) -> str:
        """The value itself, for the one place it goes on the wire."""
        return self._value

    def __repr__(self) -> str:
        return "SecretValue('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and hmac.compare_digest(self._value, other.reveal())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a SecretValue is not pickled or copied into storage")


@dataclass(frozen=True)
class SecretInfo:
    """What ``crewline secrets list`` shows: never the value."""

    name: str
    version: int
    created_at: float
    updated_at: float


def new_key() -> str:
    """A fresh 32-byte key, urlsafe base64 (what ``CREWLINE_SECRETS_KEY`` takes)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            f"{where} is not a secrets key: it must be 32 bytes in urlsafe base64; "
            "make one with `crewline secrets keygen`"
        )
    return key


def secrets_key(settings: Settings, environ: Mapping[str, str]) -> bytes | None:
    """The key from ``CREWLINE_SECRETS_KEY``, else from ``[secrets] key_file``; None when neither is set."""
    if environ.get(KEY_VARIABLE):
        return _decode_key(environ[KEY_VARIABLE], KEY_VARIABLE)
    section = settings.sections.get("secrets") or {}
    if not isinstance(section, Mapping):
        raise ConfigError('[secrets] must be a table, e.g. [secrets] key_file = "/etc/crewline/secrets.key"')
    unknown = [k for k in section if k != "key_file"]
    if unknown:
        raise ConfigError(f"[secrets] has unknown key {unknown[0]!r}; known: key_file")
    named = section.get("key_file")
    if named is None:
        return None
    if not isinstance(named, str):
        raise ConfigError(f"[secrets] key_file must be a path, got {named!r}")
    path = Path(named).expanduser()
    path = path if path.is_absolute() else settings.project_dir / path
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"[secrets] key_file: cannot read {shown_path(path)} ({type(e).__name__})") from e
    return _decode_key(text, f"[secrets] key_file {shown_path(path)}")


def check_reference(ref: object, where: str) -> str:
    """``ref`` if it is ``env:NAME`` or ``secret:NAME``, else a ConfigError naming ``where``; never
    echoes the value (a pasted token is the usual mistake)."""
    if isinstance(ref, str):
        scheme, _, name = ref.partition(":")
        if scheme in ("env", "secret") and _NAME.match(name):
            return ref
    raise ConfigError(
        f"{where} must be a credential reference, env:NAME or secret:NAME (the value itself is not shown, "
        "and never belongs in crewline.toml: `crewline secrets set NAME` stores it)"
    )


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(
            f"secret name {name[:40]!r} is not valid: use letters, digits, '_', '.', '-' (up to 128), "
            "starting with a letter or '_'"
        )
    return name


class SecretStore:
    """The ``secrets`` table (its owner). ``key`` None: listing and removing work, reading and writing
    values raise a ConfigError saying how to give the key."""

    def __init__(self, db: Database, key: bytes | None) -> None:
        self.db = db
        self._aead: AESGCM | None = None
        if key is not None:
            # Imported here: most processes never read a secret, and every one imports this module.
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(key)

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise ConfigError(
                f"no secrets key: set {KEY_VARIABLE} (make one with `crewline secrets keygen`) or "
                "[secrets] key_file in crewline.toml, then try again"
            )
        return self._aead

    async def set(self, name: str, value: str) -> int:
        """Store ``value`` under ``name`` (encrypted); returns the new version."""
        _check_name(name)
        if not value:
            raise InvalidInput(f"secret {name}: the value is empty; nothing was stored")
        nonce = os.urandom(_NONCE)
        sealed = self._cipher().encrypt(nonce, value.encode("utf-8"), name.encode("utf-8"))
        now = time.time()

        def write(conn: Conn) -> int:
            row = conn.one("SELECT version FROM secrets WHERE name = ?", (name,))
            if row is None:
                conn.execute(
                    "INSERT INTO secrets (name, nonce, ciphertext, version, created_at, updated_at) "
                    "VALUES (?, ?, ?, 1, ?, ?)",
                    (name, nonce, sealed, now, now),
                )
                return 1
            conn.execute(
                "UPDATE secrets SET nonce = ?, ciphertext = ?, version = version + 1, updated_at = ? "
                "WHERE name = ?",
                (nonce, sealed, now, name),
            )
            return int(row[0]) + 1

        return await self.db.write(write)

    async def remove(self, name: str) -> bool:
        """Delete the secret; False when there was none of that name."""
        count = await self.db.write(
            lambda conn: conn.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount
        )
        return bool(count)

    async def entries(self) -> list[SecretInfo]:
        rows = await self.db.read(
            lambda conn: conn.all(
                "SELECT name, version, created_at, updated_at FROM secrets ORDER BY name", ()
            )
        )
        return [SecretInfo(str(r[0]), int(r[1]), float(r[2]), float(r[3])) for r in rows]

    async def version(self, name: str) -> int | None:
        """The secret's version (one primary-key lookup), or None when there is none of that name."""
        found = await self.db.read(
            lambda conn: conn.scalar("SELECT version FROM secrets WHERE name = ?", (name,))
        )
        return None if found is None else int(found)

    async def get(self, name: str, known: SecretValue | None = None) -> SecretValue:
        """The secret's value; ``known`` (an earlier value) is returned as it is when its version is current."""
        row = await self.db.read(
            lambda conn: conn.one("SELECT version, nonce, ciphertext FROM secrets WHERE name = ?", (name,))
        )
        if row is None:
            raise ConfigError(f"no secret named {name!r}: store it with `crewline secrets set {name}`")
        version = int(row[0])
        if known is not None and known.version == version:
            return known
        from cryptography.exceptions import InvalidTag

        try:
            plain = self._cipher().decrypt(bytes(row[1]), bytes(row[2]), name.encode("utf-8"))
        except InvalidTag:
            raise ConfigError(
                f"secret {name!r} cannot be decrypted with this key: {KEY_VARIABLE} (or [secrets] key_file) "
                "is not the key it was stored with"
            ) from None
        return SecretValue(plain.decode("utf-8"), version)


class Credentials:
    """Resolves ``env:NAME`` and ``secret:NAME`` references; the one place credentials come from.

    ``db`` None: only ``env:`` references resolve (a process with no database, a config check)."""

    def __init__(
        self, db: Database | None, key: bytes | None, environ: Mapping[str, str] | None = None
    ) -> None:
        self._store = None if db is None else SecretStore(db, key)
        self._keyed = key is not None
        self._environ = os.environ if environ is None else environ
        self._known: dict[str, SecretValue] = {}

    @classmethod
    def from_settings(
        cls, db: Database | None, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> Credentials:
        """Credentials with the key of ``settings`` (a ConfigError when the key given is not one)."""
        env = os.environ if environ is None else environ
        return cls(db, secrets_key(settings, env), env)

    async def resolve(self, ref: str, where: str = "a credential") -> SecretValue:
        """The value ``ref`` names, read now (a rotated secret is seen at once). A ConfigError names
        ``where`` and the reference, never a value."""
        check_reference(ref, where)
        scheme, _, name = ref.partition(":")
        if scheme == "env":
            value = self._environ.get(name)
            if not value:
                raise ConfigError(f"{where}: {ref} is not set; export {name} or use secret:NAME instead")
            return SecretValue(value)
        if self._store is None:
            raise ConfigError(f"{where}: {ref} needs the secrets store, and this process has no database")
        try:
            found = await self._store.get(name, self._known.get(name))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        self._known[name] = found
        return found

    def problems(self, ref: object, where: str) -> list[str]:
        """What is wrong with ``ref`` that can be told without reading the database (for ``crewline
        config check`` when serve and worker start): its shape, an unset variable, a ``secret:``
        reference with no key to decrypt it."""
        try:
            check_reference(ref, where)
        except ConfigError as e:
            return [str(e)]
        scheme, _, name = str(ref).partition(":")
        if scheme == "env" and not self._environ.get(name):
            return [f"{where}: {ref} is not set; export {name} or use secret:NAME instead"]
        if scheme == "secret" and not self._keyed:
            return [
                f"{where}: {ref} needs the secrets key: set {KEY_VARIABLE} or [secrets] key_file "
                "(make a key with `crewline secrets keygen`)"
            ]
        return []

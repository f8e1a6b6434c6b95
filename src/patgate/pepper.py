"""The pepper: where a process gets it, and the store's fingerprint of it.

Token hashes are ``sha256(pepper || value)``, so a process whose pepper
differs from the one the tokens were made under refuses every token, and
nothing would say why. Two rules keep that from happening silently:

- The store keeps a fingerprint of the pepper it was first used with (an
  HMAC of a fixed label under the pepper; never the pepper). Every CLI command
  and every gateway compares its own and refuses to start on a mismatch
  (:func:`bind_pepper`, :class:`PepperMismatchError`).
- The embedded default needs no set-up: with no pepper in the environment and
  an SQLite store, a pepper is generated once into ``<database>.pepper``
  (mode 0600) beside the database and read from there afterwards
  (:func:`with_file_pepper`). The environment variable still wins.

A Redis store has no such file (several machines share it): without a pepper
in the environment, processes warn once with :data:`EMPTY_PEPPER_WARNING`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import os
import secrets

from patgate.config import Config, Secret, sqlite_file
from patgate.errors import ConfigError
from patgate.store.base import Store

FINGERPRINT_SETTING = "pepper_fingerprint"
_FINGERPRINT_LABEL = b"patgate pepper fingerprint v1"
PEPPER_FILE_SUFFIX = ".pepper"
EMPTY_PEPPER_WARNING = (
    "no pepper: set ${env} to the same long random value for every process"
    " before creating tokens (token hashes depend on it)"
)


class PepperMismatchError(ConfigError):
    """This process's pepper is not the one the store's tokens were made under."""


def pepper_fingerprint(pepper: bytes) -> str:
    """What the store keeps to recognise ``pepper``; reveals nothing of it."""
    return hmac.new(pepper, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]


def pepper_file(config: Config) -> str | None:
    """Where a generated pepper lives for this store: beside an SQLite file."""
    if not config.store.startswith("sqlite:///"):
        return None
    database = sqlite_file(config.store)
    return None if database == ":memory:" else database + PEPPER_FILE_SUFFIX


def empty_pepper_warning(config: Config) -> str:
    return EMPTY_PEPPER_WARNING.replace("{env}", config.pepper_env)


def with_file_pepper(config: Config) -> Config:
    """``config`` with the pepper of an existing pepper file, if it has none.

    Reading only: the file is made by :func:`bind_pepper`, on a store that has
    no fingerprint yet. A pepper from the environment always wins.
    """
    path = pepper_file(config)
    if config.pepper.value or path is None or not os.path.exists(path):
        return config
    return _use(config, _read_pepper_file(path), path)


async def bind_pepper(config: Config, store: Store) -> Config:
    """Check ``config``'s pepper against ``store``'s fingerprint; the config to use.

    A store with no fingerprint takes this process's (first claim wins); an
    SQLite store that is new and has no pepper from anywhere first gets a
    generated pepper file. Raises :class:`PepperMismatchError` on a mismatch
    and StoreUnavailableError if the store cannot answer. Nothing else in the
    store is written.
    """
    path = pepper_file(config)
    if not config.pepper.value and path is not None:
        stored = await store.get_setting(FINGERPRINT_SETTING)
        if stored is None and not await store.list_users():
            # A new store: give it a pepper of its own. (A store in use that
            # predates fingerprints keeps the empty pepper its tokens use.)
            config = _use(config, _create_pepper_file(path), path)
    mine = pepper_fingerprint(config.pepper.value)
    stored = await store.claim_setting(FINGERPRINT_SETTING, mine)
    if not hmac.compare_digest(stored, mine):
        raise PepperMismatchError(_mismatch_message(config, path))
    return config


def _mismatch_message(config: Config, path: str | None) -> str:
    origin = config.pepper_origin or "no pepper"
    where = f" or restore {path}" if path else ""
    return (
        f"pepper mismatch: this store's tokens were made under another pepper"
        f" than this process's ({origin}); set ${config.pepper_env} to the"
        f" store's pepper{where} (nothing was changed)"
    )


def _use(config: Config, pepper: bytes, origin: str) -> Config:
    return dataclasses.replace(config, pepper=Secret(pepper), pepper_origin=origin)


def _read_pepper_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            pepper = handle.read().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the pepper file {path}: {exc.strerror or exc}"
        ) from None
    if not pepper:
        raise ConfigError(f"the pepper file {path} is empty; restore it or remove it")
    return pepper


def _create_pepper_file(path: str) -> bytes:
    """Write a new random pepper to ``path`` (0600), unless another process did.

    Written to a private temporary name and linked into place, so a reader
    never sees a half-written file and of two processes one wins.
    """
    pepper = secrets.token_hex(32).encode("ascii")
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pepper + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the pepper file {path}: {exc.strerror or exc}"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return _read_pepper_file(path)

"""Per-tenant API keys, stored as SHA-256 hashes in a JSON file.

A key looks like ``tdk_<key id>.<secret>``: the key id (12 hex characters) finds the entry
without a scan, the secret is 32 random bytes (urlsafe base64). The file holds only the
SHA-256 of the whole key, so whoever reads the file (or a backup, or the Kubernetes Secret it
is mounted from) cannot call the API.

Why SHA-256 and not argon2/scrypt: a slow, salted KDF protects *low-entropy* secrets
(passwords) against guessing. A 256-bit random key cannot be guessed, so one fast hash gives
the same protection (OWASP Password Storage Cheat Sheet: the work factor is for passwords;
GitHub and Stripe store their tokens likewise), while a KDF would cost tens of milliseconds
of CPU on every request. Comparison is constant-time (`hmac.compare_digest`).

The file is re-read when its modification time changes, so `tidings api-keys create` and
`revoke` take effect on a running API without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from streams.errors import ConfigError

KEY_PREFIX = "tdk_"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")  # as streams/requests.py
_KEY = re.compile(r"^tdk_([0-9a-f]{12})\.([A-Za-z0-9_\-]{43})$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    tenant_id: str
    sha256: str
    created_at: str
    label: str = ""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_key(tenant_id: str, label: str = "") -> tuple[str, ApiKey]:
    """A fresh key (shown once) and the entry to store for it."""
    if not _TENANT.match(tenant_id):
        raise ConfigError(f"{tenant_id!r} is not a tenant id (letters, digits, ._:@-)")
    key_id = secrets.token_hex(6)
    token = f"{KEY_PREFIX}{key_id}.{secrets.token_urlsafe(32)}"
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return token, ApiKey(key_id, tenant_id, _digest(token), created, label)


def read_keys(path: Path) -> dict[str, ApiKey]:
    """The key file's entries by key id; a missing file is no keys."""
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"API keys file {path}: {exc}") from exc
    try:
        entries = [ApiKey(**entry) for entry in raw["keys"]]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"API keys file {path}: expected {{\"keys\": [...]}}: {exc}"
                          ) from exc
    return {entry.key_id: entry for entry in entries}


def write_keys(path: Path, keys: dict[str, ApiKey]) -> None:
    """Replace the file atomically (a reader never sees half of it), readable by owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = orjson.dumps({"keys": [asdict(k) for k in keys.values()]}, option=orjson.OPT_INDENT_2)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class KeyStore:
    """Looks up the tenant of a presented key; reloads the file when it changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}
        self._refresh()

    def _refresh(self) -> None:
        try:
            stat = self._path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        with self._lock:
            self._keys = read_keys(self._path)
            self._stamp = stamp

    def tenant_for(self, token: str) -> str | None:
        """The tenant the key belongs to, or None for a malformed, unknown or revoked key."""
        match = _KEY.match(token)
        if not match:
            return None
        self._refresh()
        entry = self._keys.get(match.group(1))
        if entry is None or not hmac.compare_digest(entry.sha256, _digest(token)):
            return None
        return entry.tenant_id

    def __len__(self) -> int:
        return len(self._keys)

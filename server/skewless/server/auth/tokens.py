"""Static bearer tokens (`auth.mode: token`): a file of SHA-256 hashes and subjects.

```yaml
# tokens.yaml: only hashes are stored (printf %s "$TOKEN" | sha256sum)
tokens:
  - sha256: 3f0a...e9             # hex SHA-256 of the token
    subject: checkout-service
    groups: [serving]
```

The presented token is hashed and compared with every stored hash in constant time
(`hmac.compare_digest`, no early exit), so neither timing nor an error tells which
token came close. The file is re-read when it changes (checked at most once a second),
so tokens are added and revoked without a restart; a file that became unreadable or
invalid is logged and the previous tokens kept.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skewless.core.errors import DefinitionError
from skewless.server.auth.principal import Principal

__all__ = ["StaticTokens", "TokenEntry", "load_token_file"]

_log = logging.getLogger(__name__)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHECK_INTERVAL = 1.0


@dataclass(frozen=True)
class TokenEntry:
    """One stored token: its SHA-256 digest and who it authenticates."""

    digest: bytes
    principal: Principal


def _invalid(path: Path, message: str) -> DefinitionError:
    return DefinitionError(f"auth.token_file {path}: {message}", reason="INVALID_CONFIG")


def _groups(raw: Any, path: Path, index: int) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(g, str) and g for g in raw):
        raise _invalid(path, f"tokens[{index}].groups must be a list of names")
    return frozenset(raw)


def load_token_file(path: Path) -> tuple[TokenEntry, ...]:
    """Reads and validates a token file.

    Raises:
        DefinitionError: The file cannot be read, or an entry is not a 64-digit hex
            SHA-256 with a subject (the message never shows a hash).

    """
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise _invalid(path, f"cannot read it ({exc.strerror or exc})") from exc
    except yaml.YAMLError:
        raise _invalid(path, "not valid YAML") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tokens"), list):
        raise _invalid(path, "expected a mapping with a 'tokens' list")
    entries = []
    for i, item in enumerate(raw["tokens"]):
        if not isinstance(item, dict) or set(item) - {"sha256", "subject", "groups"}:
            raise _invalid(path, f"tokens[{i}] must be a mapping of sha256, subject, groups")
        digest = item.get("sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
            raise _invalid(path, f"tokens[{i}].sha256 must be the token's SHA-256 as 64 hex digits")
        subject = item.get("subject")
        if not isinstance(subject, str) or not subject:
            raise _invalid(path, f"tokens[{i}].subject must be a non-empty name")
        entries.append(
            TokenEntry(
                digest=bytes.fromhex(digest),
                principal=Principal(subject=subject, groups=_groups(item.get("groups"), path, i)),
            )
        )
    return tuple(entries)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class StaticTokens:
    """Authenticates bearer tokens against a token file, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        """Loads the file once.

        Raises:
            DefinitionError: The file is missing or invalid.

        """
        self.path = path
        self._identity = _identity(path)
        self._entries = load_token_file(path)
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < _CHECK_INTERVAL:
            return
        with self._lock:
            self._checked = now
            identity = _identity(self.path)
            if identity == self._identity:
                return
            try:
                self._entries = load_token_file(self.path)
            except DefinitionError as exc:
                _log.warning("keeping the previous tokens: %s", exc.message)
                return
            self._identity = identity
            _log.info("loaded %d tokens from auth.token_file", len(self._entries))

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a token, or None when no stored hash matches it."""
        self._refresh()
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:  # every entry, in constant time each: no early exit
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        return found

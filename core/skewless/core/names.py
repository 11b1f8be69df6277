"""Names: what an identifier is, and how names go into DuckDB SQL.

One rule for every name skewless stores or puts into SQL (projects, entities, join keys,
sources, feature views, features, feature services and the columns a source's
`timestamp_field` names): lower-case letters, digits and `_`, starting with a letter or
`_`, at most `MAX_NAME_LENGTH` characters. The registry refuses anything else at `apply`, so
every name that later reaches SQL is one of these; `quote_identifier` checks again and
double-quotes it.
"""

from __future__ import annotations

import re

from skewless.core.errors import DefinitionError, quoted

__all__ = [
    "CREATED_TIMESTAMP",
    "EVENT_DATE",
    "EVENT_TIMESTAMP",
    "FEATURE_LOG_COLUMNS",
    "FEATURE_LOG_DIR",
    "IDENTIFIER_RULE",
    "MAX_NAME_LENGTH",
    "RESERVED_COLUMNS",
    "SOURCE_RELATION",
    "check_identifier",
    "is_identifier",
    "quote_identifier",
    "storage_name",
    "view_of_storage",
]

#: Longest accepted name of any object, feature, join key or column.
MAX_NAME_LENGTH = 63
#: The rule in words, for messages.
IDENTIFIER_RULE = (
    "lower-case letters, digits and _, starting with a letter or _, "
    f"at most {MAX_NAME_LENGTH} characters"
)
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")

#: The event-time column of every history row (and the default `timestamp_field`).
EVENT_TIMESTAMP = "event_timestamp"
#: The created-time column of every history row (a tie breaker; may be null).
CREATED_TIMESTAMP = "created_timestamp"
#: The partition column of every offline Delta table: the UTC day of `event_timestamp`
#: (stored in the Delta log and folder names, not inside the Parquet files).
EVENT_DATE = "event_date"
#: Column names the offline store uses itself; no feature or join key may take them.
RESERVED_COLUMNS = frozenset({EVENT_TIMESTAMP, CREATED_TIMESTAMP, EVENT_DATE})
#: The columns of every feature log row besides the join keys and features (see
#: `skewless.offline.feature_log`); a logged service's join keys may not take them.
FEATURE_LOG_COLUMNS = ("request_id", "request_time", "registry_version")
#: The folder of the offline store holding the feature logs; no feature view may take it.
FEATURE_LOG_DIR = "_logs"
#: The relation a view's `sql` reads; no source may take this name.
SOURCE_RELATION = "source"


def is_identifier(name: str) -> bool:
    """Whether `name` follows the one identifier rule (see the module docstring)."""
    return (
        isinstance(name, str)
        and len(name) <= MAX_NAME_LENGTH
        and _IDENTIFIER.fullmatch(name) is not None
    )


def check_identifier(name: str, what: str) -> str:
    """Returns `name` if it is an identifier.

    Args:
        name: The name.
        what: What it names, for the message (`join key`, `feature`, ...).

    Raises:
        DefinitionError: It is not (a registry that holds it was not validated).

    """
    if not is_identifier(name):
        raise DefinitionError(
            f"{what} {quoted(name)} is not a valid name: use {IDENTIFIER_RULE}",
            reason="INVALID_IDENTIFIER",
            metadata={"name": name},
        )
    return name


def quote_identifier(name: str) -> str:
    """Double-quotes an identifier for DuckDB SQL.

    Raises:
        ValueError: The name is not an identifier, so it was never validated: a bug in
            the caller, never a user error (user input is checked before it gets here).

    """
    if not is_identifier(name):
        raise ValueError(f"refusing to put {name!r:.80} into SQL: not a validated identifier")
    return f'"{name}"'


def storage_name(view: str, generation: int) -> str:
    """The name a feature view's stored values live under, for one generation.

    Generation 0 is the view's own name; a later one (after `skewless apply` changed a
    feature's type or the view's keys) is `<view>@<generation>`, which no view can be
    named. Online keys, the offline history folder and the watermark all use it, so the
    values of an earlier generation are never read as the current definition.
    """
    return view if generation <= 0 else f"{view}@{generation}"


def view_of_storage(name: str) -> str:
    """The feature view whose values a storage name (see `storage_name`) holds.

    For messages and reports, which name the view, never its generation.
    """
    return name.partition("@")[0]

"""Putting names into DuckDB SQL safely."""

from __future__ import annotations

__all__ = ["quote_identifier"]


def quote_identifier(name: str) -> str:
    """Double-quotes a name as a DuckDB identifier, escaping embedded quotes.

    Names reach SQL only after the registry validated them as identifiers; the
    escaping makes the quoting safe even for a name that was not.
    """
    return '"' + name.replace('"', '""') + '"'

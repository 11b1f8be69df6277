"""Opaque page tokens for List and Search RPCs (AIP-158)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TypeVar

from skewless.core.errors import InvalidArgumentError

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "paginate"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
T = TypeVar("T")


def _encode(offset: int, scope: str) -> str:
    return base64.urlsafe_b64encode(f"{offset}:{scope}".encode()).decode()


def _decode(token: str, scope: str) -> int:
    try:
        offset_text, token_scope = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        offset = int(offset_text)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgumentError(
            "page_token is not a token this server issued; pass next_page_token unchanged",
            field="page_token",
            reason="INVALID_PAGE_TOKEN",
        ) from exc
    if token_scope != scope or offset < 0:
        raise InvalidArgumentError(
            "page_token belongs to a different request; repeat the other fields of the "
            "call that returned it",
            field="page_token",
            reason="INVALID_PAGE_TOKEN",
        )
    return offset


def paginate(
    items: Sequence[T], page_size: int, page_token: str, scope: str = ""
) -> tuple[list[T], str]:
    """Returns one page of `items` and the token of the next page ('' on the last).

    Args:
        items: All results, in a stable order.
        page_size: Requested size; 0 means the default, larger than the maximum is capped.
        page_token: '' for the first page, else a token from a previous call.
        scope: What the token is bound to (the other request fields), so that a token
            is refused when those fields change.

    Raises:
        InvalidArgumentError: The page size is negative or the token is invalid.

    """
    if page_size < 0:
        raise InvalidArgumentError(
            f"page_size must not be negative, got {page_size}",
            field="page_size",
            reason="INVALID_PAGE_SIZE",
        )
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    offset = _decode(page_token, scope) if page_token else 0
    page = list(items[offset : offset + size])
    more = offset + size < len(items)
    return page, (_encode(offset + size, scope) if more else "")

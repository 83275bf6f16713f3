"""JSON payloads as DynamoDB attribute values, and item sizes.

A JSON payload is stored as a string attribute (``{"S": json}``), readable in the
AWS console, until it reaches ``compress_over`` bytes; from there it is stored
zlib-compressed as a binary attribute (``{"B": ...}``). Decoding looks at the
attribute's type, so both forms can be read whatever the current threshold is.
Workflow records compress well (step records repeat the same keys), which buys
headroom under DynamoDB's 400 KB item limit.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

__all__ = ["SharedTable", "decode_json", "dumps", "encode_json", "item_size"]

#: Default size from which payloads are compressed (bytes of JSON text).
COMPRESS_OVER = 16 * 1024


def dumps(value: Any) -> str:
    """Compact, deterministic JSON (sorted keys, UTF-8 kept as is)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def encode_json(value: Any, compress_over: int | None = COMPRESS_OVER) -> dict[str, Any]:
    """``value`` as an attribute value: ``{"S": json}`` or ``{"B": zlib(json)}``."""
    text = dumps(value)
    data = text.encode("utf-8")
    if compress_over is not None and len(data) >= compress_over:
        return {"B": zlib.compress(data, 6)}
    return {"S": text}


def decode_json(attribute: dict[str, Any]) -> Any:
    """The inverse of ``encode_json``; ``ValueError`` if the attribute is neither form."""
    if "S" in attribute:
        return json.loads(attribute["S"])
    if "B" in attribute:
        raw = attribute["B"]
        return json.loads(zlib.decompress(bytes(raw)).decode("utf-8"))
    raise ValueError(f"expected a string or binary attribute, got {sorted(attribute)}")


def _value_size(value: dict[str, Any]) -> int:
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode("utf-8"))
    if kind == "B":
        return len(raw)
    if kind == "N":
        return len(raw) + 1  # DynamoDB's rule is about half that; stay on the safe side
    if kind in ("BOOL", "NULL"):
        return 1
    return len(repr(raw))


def item_size(item: dict[str, dict[str, Any]]) -> int:
    """Bytes DynamoDB counts for ``item`` (attribute names plus values), rounded up."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


class SharedTable:
    """Items of one DynamoDB table read and written with a client the record store
    owns (the cache, schedules and worker registry), so ``close`` has nothing to do.

    ``compress_over``: JSON values from this many bytes are zlib-compressed.
    """

    def __init__(self, client: Any, table: str, *,
                 compress_over: int | None = COMPRESS_OVER) -> None:
        self.client = client
        self.table = table
        self.compress_over = compress_over

    def __repr__(self) -> str:
        return f"{type(self).__name__}(table={self.table!r})"

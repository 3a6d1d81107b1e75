"""A minimal reader of the key/value metadata at the head of a GGUF file.

Only the metadata is read (the tokenizer's vocabulary, merges, token types and chat template
live there); tensors are never touched. Pure Python and ``mmap``, so the token estimator needs
neither llama.cpp nor the ``gguf`` package. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import TypeAlias

GGUFValue: TypeAlias = "int | float | bool | str | list[GGUFValue]"

MAGIC = b"GGUF"
_STRING = 8
_ARRAY = 9
# value type id -> struct format of one scalar (little-endian)
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


class GGUFError(ValueError):
    """The file is not a GGUF file this reader understands."""


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> tuple[int | float | bool, ...]:
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def u32(self) -> int:
        return int(self.unpack("<I")[0])

    def u64(self) -> int:
        return int(self.unpack("<Q")[0])

    def string(self) -> str:
        n = self.u64()
        raw = self.buf[self.pos : self.pos + n]
        if len(raw) != n:
            raise GGUFError("truncated string")
        self.pos += n
        return bytes(raw).decode("utf-8", errors="surrogateescape")

    def value(self, kind: int) -> GGUFValue:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind = self.u32()
            count = self.u64()
            if item_kind in _SCALARS:
                fmt = _SCALARS[item_kind]
                items = self.unpack(f"<{count}{fmt[1]}")
                return list(items)
            return [self.value(item_kind) for _ in range(count)]
        scalar = _SCALARS.get(kind)
        if scalar is None:
            raise GGUFError(f"unknown GGUF value type {kind}")
        return self.unpack(scalar)[0]


def parse_metadata(buf: mmap.mmap | bytes) -> dict[str, GGUFValue]:
    """Decode the metadata key/value section of GGUF (v2 or v3) bytes."""
    cur = _Cursor(buf)
    if bytes(buf[:4]) != MAGIC:
        raise GGUFError("not a GGUF file (bad magic)")
    cur.pos = 4
    version = cur.u32()
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    cur.u64()  # tensor count
    kv_count = cur.u64()
    metadata: dict[str, GGUFValue] = {}
    for _ in range(kv_count):
        key = cur.string()
        metadata[key] = cur.value(cur.u32())
    return metadata


def read_metadata(path: str | Path) -> dict[str, GGUFValue]:
    """Read the metadata of the GGUF file at ``path``."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return parse_metadata(buf)

"""Integer and size tokens as scenario files and the CLI spell them.

`0x8000_0000`, `2147483648`, `4K`, `2M`, `1G`, `4G`: one parser so that op strings,
predicates and command-line arguments agree on what a number is.
"""

from __future__ import annotations

import re

from . import bits

# ASCII digits only: int() alone would also accept other scripts' digits ("١٢").
_HEX = re.compile(r"0[xX][0-9a-fA-F]+(?:_[0-9a-fA-F]+)*\Z")
_DEC = re.compile(r"[0-9]+(?:_[0-9]+)*\Z")
_SUFFIXED = re.compile(r"([0-9]+(?:_[0-9]+)*)([KMGTkmgt])\Z")
_SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

# Longest token accepted: 64-bit values need at most 16 hex or 20 decimal digits; allow
# separators but keep clear of Python's int-string conversion limit.
MAX_TOKEN_CHARS = 64

# Leaf sizes a [[map]] may use, by the name scenario files give them.
MAP_SIZES = {
    "4K": 1 << bits.LEVEL_SHIFT_3,  # level-3 page
    "2M": 1 << bits.LEVEL_SHIFT_2,  # level-2 block
    "1G": 1 << bits.LEVEL_SHIFT_1,  # level-1 block (extension)
}


def _check_token(token: object, what: str) -> str:
    if not isinstance(token, str):
        raise ValueError(f"{what} must be a string token, got {type(token).__name__}")
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"{what} {token[:20]!r}... is too long")
    return token


def is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() is also true of "²", which int() refuses."""
    return text.isascii() and text.isdigit()


def parse_int(token: str) -> int:
    """A non-negative integer: hex with 0x (underscores allowed between digits) or decimal."""
    token = _check_token(token, "integer")
    if _HEX.match(token):
        return int(token[2:].replace("_", ""), 16)
    if _DEC.match(token):
        return int(token.replace("_", ""), 10)
    raise ValueError(f"not an integer: {token!r} (write hex as 0x8000_0000 or decimal)")


def parse_size(token: str) -> int:
    """A size in bytes: `4K`, `2M`, `1G`, `4G` (K/M/G/T suffixes, powers of 1024) or an int."""
    token = _check_token(token, "size")
    m = _SUFFIXED.match(token)
    if m:
        return int(m[1].replace("_", ""), 10) * _SUFFIX[m[2].lower()]
    try:
        return parse_int(token)
    except ValueError:
        raise ValueError(f"not a size: {token!r} (use 4K, 2M, 1G, 4G or an integer)") from None


def size_name(size: int) -> str:
    """The shortest spelling parse_size reads back: 4K, 2M, 1G, 4G..., else hex."""
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return hexs(size)


def hexs(value: int) -> str:
    """Lower-case hex with 0x and no separators, as every JSON output spells addresses."""
    return f"{value:#x}"

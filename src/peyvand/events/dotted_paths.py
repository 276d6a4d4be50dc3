"""Dot-separated property paths (Appendices), the keys of push-rule conditions and of
filters' ``event_fields``."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def parse_dotted_path(key: str) -> tuple[str, ...]:
    """Split a key per Appendices, "Dot-separated property paths".

    ``\\.`` is a literal dot and ``\\\\`` a literal backslash; any other backslash is
    kept as it is.
    """
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        char = key[i]
        if char == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return tuple(parts)

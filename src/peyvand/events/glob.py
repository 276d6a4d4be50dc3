"""Glob-style matching (Appendices, "Glob-style matching"): ``*`` matches any run of
characters (possibly empty), ``?`` exactly one; the glob must match the whole text.

Used by server ACLs (``m.room.server_acl``) and moderation policy lists, whose globs come
from third parties and are matched against identifiers chosen by remote parties, so the
cost must not depend on how the two interact. A glob is never turned into a backtracking
regex (``*`` as ``.*``: exponential on ``*a*a*a*a*a*a*a*a*!``). Instead it is split on
``*`` (runs of ``*`` count as one) into segments of fixed width, each compiled alone, and
matched greedily: the first segment at the start of the text, each middle segment at its
leftmost occurrence after the previous one, the last at the end. Taking the leftmost
occurrence is always right (it leaves the most text for what follows), so nothing is ever
retried: a match costs at most O(len(text) x len(pattern)), linear in practice.

Case: matching is case-insensitive exactly as ``re.IGNORECASE`` (with ``re.DOTALL``) was
on the whole glob: each segment is such a regex, made only of literal characters and
``.``, so it compares the text one character to one character, with the ``re`` module's
simple case folding on both sides (``i`` matches ``I`` and U+0130, ``s`` matches U+017F
long s, ``ß`` does not match ``SS``). ``?`` always stands for one character of the original text.

Limit: a glob longer than ``MAX_GLOB_LENGTH`` (255) characters, after collapsing runs of
``*``, matches nothing. Identifiers (user IDs, room IDs and aliases, and so the server
names within them) are at most 255 bytes, so such a glob could only match an invalid
identifier; ignoring it bounds the work a single glob can cost (compiling and matching).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

MAX_GLOB_LENGTH: Final = 255

_FLAGS: Final = re.IGNORECASE | re.DOTALL


class Glob:
    """A compiled glob; ``matches`` says whether it matches the whole of a text."""

    __slots__ = ("_head", "_middle", "_min_length", "_starred", "_tail", "_tail_length", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        segments = pattern.split("*")
        middle = [s for s in segments[1:-1] if s]  # runs of "*" collapsed
        self._starred = len(segments) > 1
        head, tail = segments[0], segments[-1] if self._starred else ""
        self._min_length = len(head) + len(tail) + sum(map(len, middle))
        collapsed_length = self._min_length + (len(middle) + 1 if self._starred else 0)
        too_long = collapsed_length > MAX_GLOB_LENGTH  # then matches nothing: compile nothing
        self._head = None if too_long else _segment(head)
        self._middle = () if too_long else tuple(_segment(s) for s in middle)
        self._tail = None if too_long else _segment(tail)
        self._tail_length = len(tail)

    def matches(self, text: str) -> bool:
        """Whether the glob matches the whole of ``text`` (case-insensitively)."""
        if self._head is None or self._tail is None or len(text) < self._min_length:
            return False
        if not self._starred:
            return self._head.fullmatch(text) is not None
        found = self._head.match(text)
        if found is None:
            return False
        pos = found.end()
        for segment in self._middle:
            found = segment.search(text, pos)
            if found is None:
                return False
            pos = found.end()
        start = len(text) - self._tail_length
        return start >= pos and self._tail.fullmatch(text, start) is not None

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"


def _segment(segment: str) -> re.Pattern[str]:
    """A segment (no ``*``) as a fixed-width regex: literals and ``.``, no repetition,
    no alternation, so a search costs at most O(len(text) x len(segment))."""
    return re.compile("".join("." if c == "?" else re.escape(c) for c in segment), _FLAGS)


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> Glob:
    """The compiled ``pattern``; cached, since the same ACL entries and policy rules are
    matched again and again."""
    return Glob(pattern)


def glob_matches(pattern: str, text: str) -> bool:
    """Whether the glob ``pattern`` matches the whole of ``text``, case-insensitively."""
    return compile_glob(pattern).matches(text)

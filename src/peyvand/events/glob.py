"""Glob-style matching (Appendices, "Glob-style matching"): ``*`` matches any run of
characters (possibly empty), ``?`` exactly one. The one glob engine of the server, in two
modes:

- whole value (the default): the glob must match the whole text. Server ACLs
  (``m.room.server_acl``), moderation policy lists and push rules' ``event_match``;
- ``words``: the glob matches any substring of the text that starts and ends at a word
  boundary: the start or end of the text, or a character outside ``[A-Za-z0-9_]``
  (Client-Server API, "Push Rules: Conditions", ``event_match`` on ``content.body``).

Globs often come from third parties and are matched against text chosen by other
parties, so the cost must not depend on how the two interact. A glob is never turned into
a backtracking regex (``*`` as ``.*``: exponential on ``*a*a*a*a*a*a*a*a*!``). Instead it
is split on ``*`` (runs of ``*`` count as one) into segments of fixed width, each
compiled alone, and matched greedily: the first segment at the start of the text (in
``words`` mode: at its leftmost occurrence after a boundary), each middle segment at its
leftmost occurrence after the previous one, the last at the end (in ``words`` mode:
anywhere after, followed by a boundary). Taking the leftmost occurrence is always right
(it leaves the most text for what follows), so nothing is ever retried: a match costs at
most O(len(text) x len(pattern)), linear in practice.

Case: matching is case-insensitive exactly as ``re.IGNORECASE`` (with ``re.DOTALL``) was
on the whole glob: each segment is such a regex, made only of literal characters and
``.``, so it compares the text one character to one character, with the ``re`` module's
simple case folding on both sides (``i`` matches ``I`` and U+0130, ``s`` matches U+017F
long s, ``ß`` does not match ``SS``). ``?`` always stands for one character of the original text.
The word-boundary test folds the same way (U+0130, U+0131, U+017F and U+212A count as
word characters, as ``[A-Za-z]`` does under ``re.IGNORECASE``).

Limit: by default a glob longer than ``MAX_GLOB_LENGTH`` (255) characters, after
collapsing runs of ``*``, matches nothing. Identifiers (user IDs, room IDs and aliases,
and so the server names within them) are at most 255 bytes, so such a glob could only
match an invalid identifier; ignoring it bounds the work a single glob can cost
(compiling and matching). Push rules match event content, which has no such bound, and
pass ``max_length=None``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

MAX_GLOB_LENGTH: Final = 255

_FLAGS: Final = re.IGNORECASE | re.DOTALL
# The characters of a word (a regex class body): everything else is a word boundary.
WORD_CHARS: Final = "A-Za-z0-9_"
_WORD_START: Final = f"(?<![{WORD_CHARS}])"
_WORD_END: Final = f"(?![{WORD_CHARS}])"


class Glob:
    """A compiled glob; ``matches`` says whether it matches the whole of a text, or with
    ``words`` some part of it between word boundaries."""

    __slots__ = (
        "_head",
        "_middle",
        "_min_length",
        "_starred",
        "_tail",
        "_tail_length",
        "pattern",
        "words",
    )

    def __init__(
        self, pattern: str, *, words: bool = False, max_length: int | None = MAX_GLOB_LENGTH
    ) -> None:
        self.pattern = pattern
        self.words = words
        segments = pattern.split("*")
        middle = [s for s in segments[1:-1] if s]  # runs of "*" collapsed
        self._starred = len(segments) > 1
        head, tail = segments[0], segments[-1] if self._starred else ""
        self._min_length = len(head) + len(tail) + sum(map(len, middle))
        collapsed_length = self._min_length + (len(middle) + 1 if self._starred else 0)
        # A glob over the limit matches nothing: compile nothing.
        too_long = max_length is not None and collapsed_length > max_length
        start, end = (_WORD_START, _WORD_END) if words else ("", "")
        if self._starred:
            head_regex, tail_regex = start + _segment(head), _segment(tail) + end
        else:
            head_regex, tail_regex = start + _segment(head) + end, ""
        self._head = None if too_long else re.compile(head_regex, _FLAGS)
        self._middle = () if too_long else tuple(re.compile(_segment(s), _FLAGS) for s in middle)
        self._tail = None if too_long else re.compile(tail_regex, _FLAGS)
        self._tail_length = len(tail)

    def matches(self, text: str) -> bool:
        """Whether the glob matches ``text`` (case-insensitively): all of it, or with
        ``words`` any part of it that starts and ends at a word boundary."""
        if self._head is None or self._tail is None or len(text) < self._min_length:
            return False
        if not self._starred:
            if self.words:
                return self._head.search(text) is not None
            return self._head.fullmatch(text) is not None
        found = self._head.search(text) if self.words else self._head.match(text)
        if found is None:
            return False
        pos = found.end()
        for segment in self._middle:
            found = segment.search(text, pos)
            if found is None:
                return False
            pos = found.end()
        if self.words:
            return self._tail.search(text, pos) is not None
        start = len(text) - self._tail_length
        return start >= pos and self._tail.fullmatch(text, start) is not None

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r}, words=True)" if self.words else f"Glob({self.pattern!r})"


def _segment(segment: str) -> str:
    """A segment (no ``*``) as a fixed-width regex: literals and ``.``, no repetition,
    no alternation, so a search costs at most O(len(text) x len(segment))."""
    return "".join("." if c == "?" else re.escape(c) for c in segment)


@lru_cache(maxsize=16_384)
def compile_glob(
    pattern: str, *, words: bool = False, max_length: int | None = MAX_GLOB_LENGTH
) -> Glob:
    """The compiled ``pattern``; cached, since the same ACL entries, policy rules and
    push-rule patterns are matched again and again."""
    return Glob(pattern, words=words, max_length=max_length)


def glob_matches(pattern: str, text: str) -> bool:
    """Whether the glob ``pattern`` (at most ``MAX_GLOB_LENGTH`` long) matches the whole
    of ``text``, case-insensitively."""
    return compile_glob(pattern).matches(text)

"""``events.glob``: glob-style matching (Appendices, "Glob-style matching") without
backtracking, checked against simple references and on adversarial globs."""

from __future__ import annotations

import re
import time
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peyvand.events.glob import MAX_GLOB_LENGTH, Glob, compile_glob, glob_matches
from peyvand.events.policy_rules import PolicyMatcher, parse_rule
from peyvand.events.server_acl import server_allowed
from peyvand.types import ServerName


def _reference(pattern: str, text: str) -> bool:
    """The glob by definition, character by character (exponential without the cache;
    fine on small inputs), comparing characters case-insensitively as ``re`` does."""

    @cache
    def match(p: int, t: int) -> bool:
        if p == len(pattern):
            return t == len(text)
        if pattern[p] == "*":
            return match(p + 1, t) or (t < len(text) and match(p, t + 1))
        if t == len(text):
            return False
        same = pattern[p] == "?" or _same_char(pattern[p], text[t])
        return same and match(p + 1, t + 1)

    return match(0, 0)


def _same_char(a: str, b: str) -> bool:
    return re.fullmatch(re.escape(a), b, re.IGNORECASE) is not None


def _words_reference(pattern: str, text: str) -> bool:
    """Words mode by definition: the glob matches some part of ``text`` that starts and
    ends at a word boundary (Client-Server API, "Push Rules: Conditions")."""

    def boundary(i: int, j: int) -> bool:
        return not (0 <= i < len(text) and _is_word_char(text[i])) and not (
            0 <= j < len(text) and _is_word_char(text[j])
        )

    return any(
        boundary(start - 1, end) and _reference(pattern, text[start:end])
        for start in range(len(text) + 1)
        for end in range(start, len(text) + 1)
    )


def _is_word_char(char: str) -> bool:
    """``[A-Za-z0-9_]`` as ``re.IGNORECASE`` reads it (so also U+0130, U+0131, U+017F
    and U+212A)."""
    return re.fullmatch("[A-Za-z0-9_]", char, re.IGNORECASE) is not None


def _old_regex(pattern: str, text: str) -> bool:
    """What server ACLs and policy lists did before: the glob as a backtracking regex."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch("".join(parts), text, re.IGNORECASE | re.DOTALL) is not None


# A small alphabet, so that globs and texts often (nearly) match; with case variants,
# a character that is a regex metacharacter, newline, and re's odd case pairs.
_ALPHABET = "aAbB.:\nsSkKiI\u017f\u212a\u0130\u0131"  # long s, Kelvin sign, dotted/dotless i
_patterns = st.text(alphabet=_ALPHABET + "*?", max_size=12)
_texts = st.text(alphabet=_ALPHABET, max_size=14)


@settings(max_examples=2000)
@given(_patterns, _texts)
def test_agrees_with_references(pattern: str, text: str) -> None:
    expected = _reference(pattern, text)
    assert _old_regex(pattern, text) is expected
    assert glob_matches(pattern, text) is expected
    assert Glob(pattern).matches(text) is expected


@settings(max_examples=1000)
@given(_patterns, st.text(alphabet=_ALPHABET + "_ 1-\u00e9", max_size=10))
def test_words_mode_agrees_with_its_definition(pattern: str, text: str) -> None:
    expected = _words_reference(pattern, text)
    assert Glob(pattern, words=True).matches(text) is expected
    assert compile_glob(pattern, words=True, max_length=None).matches(text) is expected


@given(st.text(max_size=10), st.text(max_size=12))
def test_agrees_with_old_regex_on_any_text(pattern: str, text: str) -> None:
    assert glob_matches(pattern, text) is _old_regex(pattern, text)


@given(_texts)
def test_text_matches_itself_and_its_swapped_case(text: str) -> None:
    assert glob_matches(text, text)
    assert glob_matches(text.swapcase(), text) is _old_regex(text.swapcase(), text)


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("", "", True),
        ("", "a", False),
        ("*", "", True),
        ("**", "anything", True),
        ("?", "", False),
        ("?", "x", True),
        ("?", "xy", False),
        ("a*b", "ab", True),
        ("a*b", "axxb", True),
        ("a*b", "axxbc", False),
        ("a**b", "ab", True),
        ("*.example.org", "a.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.EXAMPLE.org", "a.example.ORG", True),
        ("a.b", "aXb", False),  # "." is a literal, not "any character"
        ("[ab]", "a", False),
        ("[ab]", "[AB]", True),
        ("a*a", "a", False),  # segments may not overlap
        ("*aa*aa*", "aaa", False),
        ("*aa*aa*", "aaaa", True),
        ("@*:evil.example", "@spam:evil.example", True),
        ("@*:evil.example", "@spam:evil.example.org", False),
        ("?*?", "ab", True),
        ("?*?", "a", False),
        ("*?", "\n", True),
    ],
)
def test_examples(pattern: str, text: str, expected: bool) -> None:
    assert glob_matches(pattern, text) is expected


def test_adversarial_globs_finish_and_are_right() -> None:
    # Each of these took seconds to minutes (or longer) as a backtracking regex; here
    # each is a few segment searches: the test would hang if that regressed.
    user = "@" + "a" * 60 + ":example.org"
    assert not glob_matches("*a*a*a*a*a*a*a*a*!", user)
    assert glob_matches("*a*a*a*a*a*a*a*a*", user)
    assert not glob_matches("*a" * 100 + "*!", "a" * 1000)
    long_text = "a" * 1000
    stars = "*" + "*".join("a" * 100) + "*"
    assert len(stars) == 201
    assert glob_matches(stars, long_text)
    assert not glob_matches(stars + "!", long_text)
    assert not glob_matches("*" + "*".join("a?" * 60) + "*b", long_text)
    assert not glob_matches("*" + "a" * 200 + "b*", long_text * 20)
    assert not glob_matches("*" * 10_000 + "a" * 100 + "!", long_text)  # runs collapse


def test_adversarial_rules_in_policy_lists_and_acls() -> None:
    entity = "*a*a*a*a*a*a*a*a*!"
    rule = parse_rule(
        "!list:x", "m.policy.rule.user", "r", {"entity": entity, "recommendation": "m.ban"}
    )
    matcher = PolicyMatcher((rule,) if rule else ())
    assert matcher.user("@" + "a" * 60 + ":example.org") is None
    assert matcher.user("@" + "a" * 60 + ":example.org!") == rule
    acl = {"allow": ["*"], "deny": [f"*{'a*' * 100}!"]}
    assert server_allowed(acl, ServerName("a" * 200 + ".example"))


def test_globs_longer_than_the_limit_match_nothing() -> None:
    at_limit = "?" * MAX_GLOB_LENGTH
    assert glob_matches(at_limit, "x" * MAX_GLOB_LENGTH)
    assert not glob_matches(at_limit + "?", "x" * (MAX_GLOB_LENGTH + 1))
    # The limit counts the glob with runs of "*" collapsed.
    starred = "**" + "?" * (MAX_GLOB_LENGTH - 1)
    assert glob_matches(starred, "x" * 300)
    assert glob_matches("*" + starred, "x" * 300)
    assert not glob_matches("*" + "?" * MAX_GLOB_LENGTH, "x" * 300)


def test_compiled_globs_are_cached() -> None:
    assert compile_glob("*:evil.example") is compile_glob("*:evil.example")
    assert repr(compile_glob("a*")) == "Glob('a*')"


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        # The spec's example: lunc?* on content.topic.
        ("lunc?*", "Lunch plans", True),
        ("lunc?*", "LUNCH", True),
        ("lunc?*", " lunch", False),
        ("lunc?*", "lunc", False),
        ("*", "", True),
        ("", "", True),
        ("", "x", False),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "aXXbYYcd", False),
        ("ab*ba", "aba", False),
        ("m.room.*", "m.room.message", True),
        ("m.room.*", "m.roomXmessage", False),  # the dot is literal
        ("a?c", "a\nc", True),
        ("[x]", "[X]", True),  # regex metacharacters are literal
    ],
)
def test_push_rule_globs_on_whole_values(pattern: str, value: str, expected: bool) -> None:
    assert compile_glob(pattern, max_length=None).matches(value) is expected


@pytest.mark.parametrize(
    ("pattern", "body", "expected"),
    [
        # The spec's example: ex*ple on content.body.
        ("ex*ple", "An example event.", True),
        ("ex*ple", "exple", True),
        ("ex*ple", "An exciting triple-whammy", True),
        ("ex*ple", "texample", False),
        ("ex*ple", "examples", False),
        ("cake", "I like CAKE!", True),
        ("cake", "cakes", False),
        ("cake", "pancake", False),
        ("cake", "so_cake", False),  # underscore is a word character
        ("cake", "é cake é", True),  # non-ASCII letters are boundaries
        ("*cake", "pancake", True),
        ("c?ke", "a coke", True),
    ],
)
def test_words_mode_matches_between_word_boundaries(
    pattern: str, body: str, expected: bool
) -> None:
    assert compile_glob(pattern, words=True, max_length=None).matches(body) is expected


def test_words_mode_has_no_catastrophic_backtracking() -> None:
    glob = compile_glob("*a*a*a*a*a*a*a*a*b", words=True, max_length=None)
    start = time.perf_counter()
    assert not glob.matches("a" * 60_000)
    assert time.perf_counter() - start < 1.0


def test_words_mode_needs_boundaries_at_both_ends() -> None:
    words = Glob("a*b", words=True)
    assert words.matches("x a-b y")
    assert words.matches("ab")
    assert not words.matches("xa b")
    assert not words.matches("a bx")
    assert words.matches("a bx b")  # the last segment may be anywhere after the first
    assert not Glob("a*b").matches("x a-b y")  # whole-value mode needs all of it
    assert Glob("", words=True).matches("a  b")  # an empty part between two spaces
    assert not Glob("", words=True).matches("ab")


def test_push_rule_globs_have_no_length_limit() -> None:
    long_pattern = "x" * (MAX_GLOB_LENGTH + 1)
    assert not glob_matches(long_pattern, long_pattern)
    assert compile_glob(long_pattern, max_length=None).matches(long_pattern)
    assert compile_glob(long_pattern, words=True, max_length=None).matches(f"{long_pattern}!")
    assert not compile_glob(long_pattern, words=True).matches(long_pattern)


def test_each_mode_is_cached_apart() -> None:
    words = compile_glob("cake", words=True, max_length=None)
    assert words is compile_glob("cake", words=True, max_length=None)
    assert words is not compile_glob("cake")
    assert repr(words) == "Glob('cake', words=True)"

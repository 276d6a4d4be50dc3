"""Which media an event's content names (events/media_refs.py): what purging an event
may delete with it, so missing a reference would delete media still in use."""

from __future__ import annotations

from typing import Any

import pytest

from peyvand.events.media_refs import media_references


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"msgtype": "m.image", "url": "mxc://hs.test/img"}, {("hs.test", "img")}),
        (
            {"url": "mxc://hs.test/img", "info": {"thumbnail_url": "mxc://hs.test/thumb"}},
            {("hs.test", "img"), ("hs.test", "thumb")},
        ),
        (
            {
                "file": {"url": "mxc://hs.test:8448/enc", "key": {}},
                "info": {"thumbnail_file": {"url": "mxc://[::1]:8448/encthumb"}},
            },
            {("hs.test:8448", "enc"), ("[::1]:8448", "encthumb")},
        ),
        ({"membership": "join", "avatar_url": "mxc://o.test/av"}, {("o.test", "av")}),
        (
            {"body": "* new", "m.new_content": {"url": "mxc://hs.test/edited"}},
            {("hs.test", "edited")},
        ),
        (
            {"formatted_body": '<p>hi <img src="mxc://hs.test/inline" alt="x"></p>'},
            {("hs.test", "inline")},
        ),
        (
            {
                "images": {"cat": {"url": "mxc://hs.test/cat"}, "bad": "mxc://hs.test/no"},
                "pack": {"avatar_url": "mxc://hs.test/packav"},
            },
            {("hs.test", "cat"), ("hs.test", "packav")},
        ),
        # Malformed: not strings, no media ID, another scheme, nested wrongly.
        ({"url": 5, "avatar_url": "mxc://only-server", "info": "x"}, set()),
        ({"url": "https://hs.test/img", "file": {"url": ["mxc://a/b"]}}, set()),
        ({"m.new_content": "mxc://a/b", "images": ["mxc://a/b"], "formatted_body": 3}, set()),
    ],
)
def test_references(content: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    assert media_references(content) == expected


def test_every_html_reference_counts() -> None:
    """All of them (an event's size bounds how many): one missed would be deleted while
    this message still shows it."""
    html = "".join(f'<img src="mxc://hs.test/m{i}">' for i in range(1000))
    assert media_references({"formatted_body": html}) == {("hs.test", f"m{i}") for i in range(1000)}

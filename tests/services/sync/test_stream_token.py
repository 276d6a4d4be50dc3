"""The /sync token: one position per stream, in a fixed order; a token handed out before
a stream was added (the partial-state completions, issue 15) still parses, that stream at
0, so clients keep syncing across the upgrade; anything else is M_INVALID_PARAM."""

from __future__ import annotations

import pytest

from peyvand.errors import Errcode, MatrixError
from peyvand.services.sync.streams import Stream, StreamToken


def test_a_token_round_trips_with_every_stream() -> None:
    token = StreamToken(1, 2, 3, 4, 5, 6, 7, 8)
    assert token.serialize() == "s1_2_3_4_5_6_7_8"
    assert StreamToken.parse(token.serialize()) == token
    assert token.get(Stream.PARTIAL_STATE) == 8


def test_a_token_from_before_the_partial_state_stream_parses() -> None:
    old = StreamToken.parse("s10_2_3_4_5_6_7")
    assert old == StreamToken(10, 2, 3, 4, 5, 6, 7, partial_state=0)
    assert StreamToken(10, 2, 3, 4, 5, 6, 7, partial_state=1).is_after(old)


@pytest.mark.parametrize("token", ["s1_2_3_4_5_6_7_8_9", "t1", "s1_x", "s-1"])
def test_other_tokens_are_refused(token: str) -> None:
    with pytest.raises(MatrixError) as refused:
        StreamToken.parse(token)
    assert refused.value.errcode == Errcode.INVALID_PARAM


def test_kept_serialisations_and_parses_match_the_tokens() -> None:
    """The last serialisation and recent parses are kept (issue 15, "hot room"): each
    must still be that of the token at hand."""
    first, second = StreamToken(1, 2, 3), StreamToken(1, 2, 4)
    assert first.serialize() == "s1_2_3_0_0_0_0_0"
    assert second.serialize() == "s1_2_4_0_0_0_0_0"
    assert first.serialize() == "s1_2_3_0_0_0_0_0"
    assert StreamToken.parse("s1_2_3") == first
    assert StreamToken.parse("s1_2_3") == first
    assert StreamToken.parse("s1_2_4") == second
    with pytest.raises(MatrixError):
        StreamToken.parse("s1_x")
    with pytest.raises(MatrixError):
        StreamToken.parse("s1_x")


def test_advancing_a_stream_to_where_it_is_keeps_the_token() -> None:
    token = StreamToken(5, 6, 7)
    assert token.advanced(Stream.RECEIPTS, 7) is token
    moved = token.advanced(Stream.RECEIPTS, 8)
    assert moved == StreamToken(5, 6, 8)
    assert moved.serialize() == "s5_6_8_0_0_0_0_0"

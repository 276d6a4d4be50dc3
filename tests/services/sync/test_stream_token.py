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

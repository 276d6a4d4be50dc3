"""``GET /threads`` pagination tokens (services/rooms/threads.py): every stream position,
backfilled history's negative ones too, comes back from its token; anything else is
400 M_INVALID_PARAM."""

from __future__ import annotations

import pytest

from peyvand.errors import Errcode, MatrixError
from peyvand.services.rooms.threads import make_token, parse_token


@pytest.mark.parametrize("position", [0, 1, 42, -7, 2**63 - 1, -(2**63 - 1)])
def test_tokens_round_trip(position: int) -> None:
    assert parse_token(make_token(position)) == position


@pytest.mark.parametrize(
    "token",
    ["", "t", "t-", "12", "s12_0_0", "t1.5", "t 1", "t+1", "t\u0661\u0662", f"t{2**63}", "t12x"],
)
def test_bad_tokens_are_invalid_params(token: str) -> None:
    with pytest.raises(MatrixError) as raised:
        parse_token(token)
    assert raised.value.errcode == Errcode.INVALID_PARAM

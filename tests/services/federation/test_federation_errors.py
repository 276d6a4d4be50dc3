"""Another server's refusal as the client gets it (services/federation/errors.py)."""

from __future__ import annotations

from peyvand.errors import Errcode
from peyvand.federation.client import FederationHttpError
from peyvand.services.federation.errors import join_refusal, refusal


def _answer(status: int, body: object) -> FederationHttpError:
    errcode = body.get("errcode") if isinstance(body, dict) else None
    message = body.get("error", f"HTTP {status}") if isinstance(body, dict) else f"HTTP {status}"
    return FederationHttpError(status, errcode, message, body)


def test_status_errcode_and_fields_are_kept() -> None:
    error = refusal(
        _answer(
            400,
            {"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "no", "room_version": "12"},
        )
    )
    assert error.status == 400
    assert error.errcode is Errcode.INCOMPATIBLE_ROOM_VERSION
    assert error.to_json() == {
        "errcode": "M_INCOMPATIBLE_ROOM_VERSION",
        "error": "no",
        "room_version": "12",
    }


def test_unknown_errcodes_are_kept_as_sent() -> None:
    error = refusal(_answer(403, {"errcode": "ORG_EXAMPLE_NOPE", "error": "nope"}))
    assert (error.status, error.to_json()["errcode"]) == (403, "ORG_EXAMPLE_NOPE")


def test_nothing_that_would_log_the_client_out() -> None:
    error = refusal(_answer(401, {"errcode": "M_UNKNOWN_TOKEN", "error": "who?"}))
    assert (error.status, error.to_json()["errcode"]) == (400, "M_UNKNOWN")


def test_a_body_that_is_not_a_matrix_error() -> None:
    error = refusal(_answer(404, b"<html>not found</html>"))
    assert error.status == 404
    assert error.to_json() == {"errcode": "M_UNKNOWN", "error": "HTTP 404"}


def test_joins_try_the_next_server_on_5xx_and_failover_errcodes() -> None:
    assert join_refusal(_answer(500, {"errcode": "M_UNKNOWN", "error": "oops"})) is None
    assert join_refusal(_answer(404, {"errcode": "M_NOT_FOUND", "error": "no room"})) is None
    unable = {"errcode": "M_UNABLE_TO_AUTHORISE_JOIN", "error": "ask elsewhere"}
    assert join_refusal(_answer(400, unable)) is None
    banned = join_refusal(_answer(403, {"errcode": "M_FORBIDDEN", "error": "banned"}))
    assert banned is not None
    assert (banned.status, banned.errcode) == (403, Errcode.FORBIDDEN)

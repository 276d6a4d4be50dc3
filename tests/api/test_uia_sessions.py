"""User-interactive authentication sessions over HTTP on every backend (Client-Server API,
"User-interactive authentication API"), where Peyvand follows Synapse: a registration
session remembers the first request's parameters and, once complete, can be retried;
every 401 lists the ``completed`` stages."""

from __future__ import annotations

from typing import Any

from harness.client import MatrixClient, unique_localpart


async def test_registration_remembers_parameters(client: MatrixClient) -> None:
    localpart = unique_localpart("remember")
    first = await client.request(
        "POST",
        "register",
        json={
            "username": localpart,
            "password": "sUp3rs3kr1t",
            "device_id": "xyzzy",
            "initial_device_display_name": "display_name",
        },
    )
    assert first.status == 401 and first.body["completed"] == []
    auth = {"type": "m.login.dummy", "session": first.body["session"]}
    done = (await client.request("POST", "register", json={"auth": auth})).ok()
    assert done["user_id"].startswith(f"@{localpart}:") and done["device_id"] == "xyzzy"
    device = await client.request("GET", "devices/xyzzy", token=done["access_token"])
    assert device.ok()["display_name"] == "display_name"
    # The remembered password is the account's.
    login = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": "sUp3rs3kr1t",
    }
    (await client.request("POST", "login", json=login)).ok()


async def test_registration_is_idempotent_per_session(client: MatrixClient) -> None:
    for username in (None, unique_localpart("again")):
        body: dict[str, Any] = {"password": "sUp3rs3kr1t"}
        if username is not None:
            body["username"] = username
        first = await client.request("POST", "register", json=body)
        body["auth"] = {"type": "m.login.dummy", "session": first.body["session"]}
        one = (await client.request("POST", "register", json=body)).ok()
        two = (await client.request("POST", "register", json=body)).ok()
        assert one["user_id"] == two["user_id"]
        assert one["access_token"] != two["access_token"]
    # Another session for a taken name is still refused.
    taken = await client.request("POST", "register", json={"username": username, "password": "x"})
    assert taken.status == 400 and taken.body["errcode"] == "M_USER_IN_USE"


async def test_failed_stage_answers_completed(client: MatrixClient) -> None:
    alice = await client.register()
    wrong = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": "not the password",
    }
    failed = await client.request("POST", "account/deactivate", json={"auth": wrong}, token=alice)
    assert failed.status == 401 and failed.body["errcode"] == "M_FORBIDDEN"
    assert failed.body["completed"] == [] and failed.body["flows"] and "params" in failed.body


async def test_registration_refuses_control_characters(client: MatrixClient) -> None:
    """A trailing newline is no part of a valid localpart (``$`` alone would match it)."""
    name = unique_localpart("ctl")
    for bad in (f"{name}\n", f"{name}\r", f"{name}\t"):
        body = {"username": bad, "password": "sUp3rs3kr1t", "auth": {"type": "m.login.dummy"}}
        refused = await client.request("POST", "register", json=body)
        assert refused.status == 400 and refused.body["errcode"] == "M_INVALID_USERNAME"

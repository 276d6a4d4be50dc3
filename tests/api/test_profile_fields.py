"""Custom profile fields (Client-Server API "Profiles", v1.16) over HTTP against a real
Peyvand, on every backend: GET/PUT/DELETE ``/profile/{userId}/{keyName}``, the fields in
the whole profile, the key grammar, the 64 KiB limit and ``m.profile_fields``."""

from __future__ import annotations

from harness.client import MatrixClient, Response


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def test_custom_fields_are_set_read_listed_and_deleted(client: MatrixClient) -> None:
    alice = await client.register()
    base = f"profile/{alice.user_id}"
    missing = await client.request("GET", f"{base}/org.example.job_title")
    assert_error(missing, 404, "M_NOT_FOUND")
    value = {"title": "Engineer", "since": 2020, "tags": ["a", "b"]}
    put = await client.request(
        "PUT", f"{base}/org.example.job_title", json={"org.example.job_title": value}, token=alice
    )
    assert put.ok() == {}
    (await client.request("PUT", f"{base}/m.tz", json={"m.tz": "Europe/London"}, token=alice)).ok()
    null = {"org.example.nothing": None}
    (await client.request("PUT", f"{base}/org.example.nothing", json=null, token=alice)).ok()
    (
        await client.request("PUT", f"{base}/displayname", json={"displayname": "Al"}, token=alice)
    ).ok()

    got = await client.request("GET", f"{base}/org.example.job_title")
    assert got.ok() == {"org.example.job_title": value}
    assert (await client.request("GET", f"{base}/org.example.nothing")).ok() == null
    assert (await client.request("GET", f"{base}/m.tz")).ok() == {"m.tz": "Europe/London"}
    assert (await client.request("GET", base)).ok() == {
        "displayname": "Al",
        "m.tz": "Europe/London",
        "org.example.job_title": value,
        "org.example.nothing": None,
    }
    # Set again: replaced, not added.
    again = {"org.example.job_title": "CTO"}
    (await client.request("PUT", f"{base}/org.example.job_title", json=again, token=alice)).ok()
    assert (await client.request("GET", f"{base}/org.example.job_title")).ok() == again

    (await client.request("DELETE", f"{base}/org.example.job_title", token=alice)).ok()
    gone = await client.request("GET", f"{base}/org.example.job_title")
    assert_error(gone, 404, "M_NOT_FOUND")
    # Deleting what is not set is no error.
    (await client.request("DELETE", f"{base}/org.example.job_title", token=alice)).ok()
    assert (await client.request("GET", base)).ok() == {
        "displayname": "Al",
        "m.tz": "Europe/London",
        "org.example.nothing": None,
    }


async def test_bad_keys_and_bodies_are_refused(client: MatrixClient) -> None:
    alice = await client.register()
    base = f"profile/{alice.user_id}"
    long_key = "a" * 256
    too_long = await client.request("PUT", f"{base}/{long_key}", json={long_key: 1}, token=alice)
    assert_error(too_long, 400, "M_KEY_TOO_LARGE")
    assert_error(await client.request("GET", f"{base}/{long_key}"), 400, "M_KEY_TOO_LARGE")
    for key in ("Org.Example", "9lives", "org.ex ample", "org.exämple"):
        bad = await client.request("PUT", f"{base}/{key}", json={key: 1}, token=alice)
        assert_error(bad, 400, "M_INVALID_PARAM")
        assert_error(
            await client.request("DELETE", f"{base}/{key}", token=alice), 400, "M_INVALID_PARAM"
        )
    missing = await client.request("PUT", f"{base}/org.example.a", json={"other": 1}, token=alice)
    assert_error(missing, 400, "M_MISSING_PARAM")
    not_string = await client.request(
        "PUT", f"{base}/displayname", json={"displayname": 5}, token=alice
    )
    assert_error(not_string, 400, "M_INVALID_PARAM")
    not_object = await client.request("PUT", f"{base}/org.example.a", json=["x"], token=alice)
    assert_error(not_object, 400, "M_NOT_JSON")


async def test_the_profile_stays_within_64_kib(client: MatrixClient) -> None:
    alice = await client.register()
    base = f"profile/{alice.user_id}"
    half = "x" * 40_000
    (
        await client.request(
            "PUT", f"{base}/org.example.a", json={"org.example.a": half}, token=alice
        )
    ).ok()
    over = await client.request(
        "PUT", f"{base}/org.example.b", json={"org.example.b": half}, token=alice
    )
    assert_error(over, 400, "M_PROFILE_TOO_LARGE")
    assert_error(await client.request("GET", f"{base}/org.example.b"), 404, "M_NOT_FOUND")
    # Replacing a field counts its new value only.
    (
        await client.request(
            "PUT", f"{base}/org.example.a", json={"org.example.a": half + "y"}, token=alice
        )
    ).ok()
    (await client.request("DELETE", f"{base}/org.example.a", token=alice)).ok()
    (
        await client.request(
            "PUT", f"{base}/org.example.b", json={"org.example.b": half}, token=alice
        )
    ).ok()


async def test_only_the_owner_changes_fields(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    path = f"profile/{bob.user_id}/org.example.a"
    put = await client.request("PUT", path, json={"org.example.a": 1}, token=alice)
    assert_error(put, 403, "M_FORBIDDEN")
    assert_error(await client.request("DELETE", path, token=alice), 403, "M_FORBIDDEN")
    unauthenticated = await client.request("PUT", path, json={"org.example.a": 1})
    assert_error(unauthenticated, 401, "M_MISSING_TOKEN")
    nobody = await client.request("GET", "profile/@nobody-at-all:localhost/org.example.a")
    assert_error(nobody, 404, "M_NOT_FOUND")


async def test_capabilities_advertise_profile_fields(client: MatrixClient) -> None:
    alice = await client.register()
    capabilities = (await client.request("GET", "capabilities", token=alice)).ok()["capabilities"]
    assert capabilities["m.profile_fields"] == {"enabled": True}
    assert capabilities["m.set_displayname"] == {"enabled": True}
    assert capabilities["m.set_avatar_url"] == {"enabled": True}


async def test_erasing_an_account_deletes_its_custom_fields(client: MatrixClient) -> None:
    """Account deactivation with ``erase`` (docs/compliance.md, "Erasure")."""
    alice = await client.register()
    base = f"profile/{alice.user_id}"
    (
        await client.request("PUT", f"{base}/org.example.a", json={"org.example.a": 1}, token=alice)
    ).ok()
    first = await client.request("POST", "account/deactivate", json={"erase": True}, token=alice)
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": alice.password,
        "session": first.body["session"],
    }
    body = {"erase": True, "auth": auth}
    (await client.request("POST", "account/deactivate", json=body, token=alice)).ok()
    assert_error(await client.request("GET", f"{base}/org.example.a"), 404, "M_NOT_FOUND")
    assert (await client.request("GET", base)).ok() == {}

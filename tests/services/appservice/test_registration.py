"""Registration files: what loads, and the error each bad file gets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from peyvand.services.appservice.registration import (
    RegistrationError,
    load_registrations,
    parse_registration,
)
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.types import ServerName

SERVER = ServerName("example.org")


def registration(**overrides: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": "telegram",
        "url": "http://127.0.0.1:29317",
        "as_token": "as-secret",
        "hs_token": "hs-secret",
        "sender_localpart": "telegrambot",
        "namespaces": {
            "users": [{"exclusive": True, "regex": "@telegram_.*:example\\.org"}],
            "aliases": [{"exclusive": True, "regex": "#telegram_.*:example\\.org"}],
            "rooms": [],
        },
        "de.sorunome.msc2409.push_ephemeral": True,
        "org.matrix.msc3202": True,
    }
    info.update(overrides)
    return info


def write(tmp_path: Path, name: str, info: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(info))
    return path


def test_a_generated_registration_loads(tmp_path: Path) -> None:
    (service,) = load_registrations([write(tmp_path, "t.yaml", registration())], SERVER)
    assert service.sender == "@telegrambot:example.org"
    assert service.receive_ephemeral and service.msc3202 and not service.msc4190
    assert service.rate_limited
    assert service.is_exclusive_user("@telegram_123:example.org")
    assert service.is_exclusive_user("@telegrambot:example.org")
    assert not service.is_user_in_namespace("@alice:example.org")
    # A regex matches from the start of the ID (as Synapse): one without the server part
    # still claims the users it names, and one elsewhere in the ID does not.
    prefix = parse_registration(
        registration(namespaces={"users": [{"exclusive": True, "regex": "@pre_[0-9]+"}]}),
        SERVER,
    )
    assert prefix.is_exclusive_user("@pre_123:example.org")
    assert not prefix.is_user_in_namespace("@x_pre_123:example.org")
    assert service.is_exclusive_alias("#telegram_chat:example.org")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"id": ""}, "'id' must be a non-empty string"),
        ({"url": "ftp://x"}, "'url' must be an http(s) URL or null"),
        ({"sender_localpart": "bad:name"}, "'sender_localpart' is not a valid user localpart"),
        ({"namespaces": {"users": [{"exclusive": True, "regex": "("}]}}, "not a valid regular"),
        ({"namespaces": {"users": [{"regex": "@a.*"}]}}, "exclusive must be true or false"),
        ({"rate_limited": "no"}, "'rate_limited' must be true or false"),
        ({"ip_range_whitelist": ["10.0.0.0/33"]}, "'ip_range_whitelist'"),
        ({"ip_range_whitelist": "10.0.0.0/8"}, "must be a list of CIDR ranges"),
        ({"protocols": "telegram"}, "'protocols' must be a list of strings"),
        ({"hs_token": "as-secret"}, "must differ"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    path = write(tmp_path, "bad.yaml", registration(**overrides))
    with pytest.raises(RegistrationError, match=re.escape(message)) as caught:
        load_registrations([path], SERVER)
    assert str(path) in str(caught.value)


def test_missing_fields_and_bad_yaml(tmp_path: Path) -> None:
    info = registration()
    del info["hs_token"]
    with pytest.raises(RegistrationError, match="'hs_token' is required"):
        parse_registration(info, SERVER)
    path = tmp_path / "broken.yaml"
    path.write_text("id: [unclosed")
    with pytest.raises(RegistrationError, match="not valid YAML"):
        load_registrations([path], SERVER)
    with pytest.raises(RegistrationError, match="cannot be read"):
        load_registrations([tmp_path / "absent.yaml"], SERVER)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (registration(as_token="other", hs_token="other-hs"), "'id' is the same"),
        (registration(id="b", hs_token="other-hs"), "'as_token' is the same"),
        (registration(id="b", as_token="b1", hs_token="b2"), "'sender_localpart' is the same"),
        (
            registration(
                id="b",
                as_token="b1",
                hs_token="b2",
                sender_localpart="telegram_bot",
                namespaces={"users": [{"exclusive": True, "regex": "@tg_.*"}]},
            ),
            "claims the bot",
        ),
        (
            registration(
                id="b",
                as_token="b1",
                hs_token="b2",
                sender_localpart="otherbot",
                namespaces={
                    "aliases": [{"exclusive": True, "regex": "#telegram_.*:example\\.org"}]
                },
            ),
            "both claim the exclusive aliases namespace",
        ),
    ],
)
def test_registrations_must_not_collide(
    tmp_path: Path, second: dict[str, Any], message: str
) -> None:
    paths = [write(tmp_path, "a.yaml", registration()), write(tmp_path, "b.yaml", second)]
    with pytest.raises(RegistrationError, match=message):
        load_registrations(paths, SERVER)


def test_a_failed_reload_keeps_the_loaded_set(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", registration())
    registry = AppServiceRegistry([path], SERVER)
    told: list[int] = []
    registry.listeners.append(lambda services: told.append(len(services)))
    path.write_text("id: [unclosed")
    with pytest.raises(RegistrationError):
        registry.reload()
    assert registry.by_token("as-secret", "127.0.0.1") is not None
    path.write_text(yaml.safe_dump(registration(as_token="rotated")))
    registry.reload()
    assert registry.by_token("as-secret", "127.0.0.1") is None
    assert registry.by_token("rotated", "127.0.0.1") is not None and told == [1]
    assert [s.id for s in registry.exclusive_owners_of_user("@telegram_9:example.org")] == [
        "telegram"
    ]
    assert registry.exclusive_owners_of_alias("#other:example.org") == []


def test_what_synapse_accepts_of_generated_files_loads(tmp_path: Path) -> None:
    info = registration(rate_limited=None)
    info["namespaces"]["groups"] = []  # an old namespace kind, ignored
    (service,) = load_registrations([write(tmp_path, "t.yaml", info)], SERVER)
    assert service.rate_limited


def test_ip_range_whitelist_limits_where_the_as_token_is_accepted(tmp_path: Path) -> None:
    info = registration(ip_range_whitelist=["10.1.0.0/16", "::1/128"])
    registry = AppServiceRegistry([write(tmp_path, "t.yaml", info)], SERVER)
    for ip in ("10.1.2.3", "::ffff:10.1.2.3", "::1"):
        assert registry.by_token("as-secret", ip) is not None, ip
    refused: tuple[str | None, ...] = ("127.0.0.1", "10.2.0.1", None, "unknown")
    for other in refused:
        assert registry.by_token("as-secret", other) is None, other
    (open_service,) = load_registrations([write(tmp_path, "o.yaml", registration())], SERVER)
    assert open_service.allows_ip("192.0.2.1") and open_service.allows_ip(None)

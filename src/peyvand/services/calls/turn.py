"""TURN credentials (Client-Server API, "Voice over IP", ``GET /voip/turnServer``).

With a secret shared with the TURN server they are time-limited, in the scheme of the TURN
REST API draft that coturn implements (``use-auth-secret``): the user name is
``<expiry, Unix seconds>:<user ID>`` and the password is the base64 of the HMAC-SHA1 of
that user name keyed with the secret, so the TURN server checks them without asking the
homeserver and refuses them once the expiry has passed. Without a secret, the configured
static user name and password are given out. As Synapse, nothing is given without URIs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from peyvand.config.model import VoipConfig
from peyvand.types import JsonDict


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    username: str
    password: str
    uris: tuple[str, ...]
    ttl: int  # seconds

    def to_json(self) -> JsonDict:
        return {
            "username": self.username,
            "password": self.password,
            "uris": list(self.uris),
            "ttl": self.ttl,
        }


def rest_api_credentials(secret: str, user_id: str, expiry: int) -> tuple[str, str]:
    """The user name and password valid until ``expiry`` (Unix seconds) for ``user_id``."""
    username = f"{expiry}:{user_id}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode("ascii")


def turn_credentials(config: VoipConfig, user_id: str, now: float) -> TurnCredentials | None:
    """What ``user_id`` gets at time ``now`` (Unix seconds); None when TURN is not set up."""
    if not config.turn_uris:
        return None
    lifetime = config.turn_user_lifetime
    if config.turn_shared_secret is not None:
        expiry = int(now) + lifetime
        username, password = rest_api_credentials(config.turn_shared_secret, user_id, expiry)
    elif config.turn_username is not None and config.turn_password is not None:
        username, password = config.turn_username, config.turn_password
    else:
        return None
    return TurnCredentials(username, password, config.turn_uris, lifetime)

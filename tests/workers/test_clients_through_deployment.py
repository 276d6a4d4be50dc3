"""The client-library tests of tests/clients, run unchanged against a deployment (issue
21, acceptance): matrix-nio's chat and end-to-end encrypted conversation and
matrix-js-sdk's (Rust crypto), through nginx, sends on the event writer and every /sync
on the client reader (``homeserver`` is the deployment's nginx: tests/workers/conftest.py)."""

from clients.conftest import pair
from clients.test_js_sdk import test_js_sdk_chat
from clients.test_js_sdk_e2ee import test_js_sdk_e2ee
from clients.test_nio import test_nio_chat
from clients.test_nio_e2ee import make_user, test_nio_encrypted_room

__all__ = [
    "make_user",
    "pair",
    "test_js_sdk_chat",
    "test_js_sdk_e2ee",
    "test_nio_chat",
    "test_nio_encrypted_room",
]

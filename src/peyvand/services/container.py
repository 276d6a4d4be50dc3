"""The services, built once in ``app.py`` and handed to the API layer.

Plain attributes, no lookups by name: each handler reaches the one service it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from peyvand.config import Config
from peyvand.services.auth import AuthService
from peyvand.services.registration import RegistrationService


@dataclass
class Services:
    config: Config
    auth: AuthService
    registration: RegistrationService

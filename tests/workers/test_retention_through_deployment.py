"""The retention tests of tests/api/test_retention.py, run unchanged against a deployment
behind nginx (issue 21, acceptance): the purge asked of the admin API on the event writer
removes the old history from the API (a client reader's answers included), the database
and the disk; a legal hold keeps a room's (``private_homeserver`` is the deployment's
nginx: tests/workers/conftest.py)."""

from api.test_retention import (
    client,
    test_expired_history_is_gone_from_api_database_and_disk,
    test_redacted_content_is_deleted_except_under_hold,
)

__all__ = [
    "client",
    "test_expired_history_is_gone_from_api_database_and_disk",
    "test_redacted_content_is_deleted_except_under_hold",
]

"""The push tests of tests/push, run unchanged against a deployment (issue 21,
acceptance): Peyvand -> Sygnal -> a browser push service, with the pushers running on
the event writer, receipts and reads going through nginx (``push_homeserver`` is the
deployment's nginx: tests/workers/conftest.py)."""

from push.conftest import gateway_tap, push_client, sygnal, webpush_receiver
from push.test_push_through_sygnal import (
    test_a_mention_is_high_priority_with_highlight,
    test_a_message_reaches_the_push_service_with_its_content,
    test_a_read_receipt_sends_a_counts_only_update,
)

__all__ = [
    "gateway_tap",
    "push_client",
    "sygnal",
    "test_a_mention_is_high_priority_with_highlight",
    "test_a_message_reaches_the_push_service_with_its_content",
    "test_a_read_receipt_sends_a_counts_only_update",
    "webpush_receiver",
]

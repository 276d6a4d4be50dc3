"""matrix-nio's ``AsyncClient`` chats through Peyvand: two users register, log in, invite,
join, exchange messages, paginate, edit, redact, type, send receipts and change their
display name, each seeing the other's actions through nio's own sync."""

from __future__ import annotations

import asyncio
from typing import Any

import nio
import pytest

from harness.nio_client import ok, shared_room, sync_until, timeline
from harness.server import HomeserverProcess

pytestmark = pytest.mark.clients

OVERALL_TIMEOUT_SECONDS = 60
EARLY_MESSAGES = 15


def _ephemeral(response: nio.SyncResponse, room_id: str) -> list[Any]:
    room = response.rooms.join.get(room_id)
    return list(room.ephemeral) if room is not None else []


async def test_nio_chat(
    homeserver: HomeserverProcess, pair: tuple[nio.AsyncClient, nio.AsyncClient]
) -> None:
    alice, bob = pair
    async with asyncio.timeout(OVERALL_TIMEOUT_SECONDS):
        room_id = await shared_room(alice, bob)

        # Early history that B will only reach by paginating.
        early: list[str] = []
        for i in range(EARLY_MESSAGES):
            content = {"msgtype": "m.text", "body": f"early {i}"}
            sent = await alice.room_send(room_id, "m.room.message", content)
            early.append(ok(sent, nio.RoomSendResponse).event_id)

        # They exchange messages; each receives the other's through sync.
        hello = {"msgtype": "m.text", "body": "hello bob"}
        from_alice = ok(
            await alice.room_send(room_id, "m.room.message", hello), nio.RoomSendResponse
        ).event_id
        await sync_until(bob, lambda r: any(e.event_id == from_alice for e in timeline(r, room_id)))
        hi = {"msgtype": "m.text", "body": "hi alice"}
        from_bob = ok(
            await bob.room_send(room_id, "m.room.message", hi), nio.RoomSendResponse
        ).event_id
        await sync_until(alice, lambda r: any(e.event_id == from_bob for e in timeline(r, room_id)))

        # B paginates history with /messages and finds every early message, in order.
        seen: list[str] = []
        token: str | None = bob.next_batch  # a sync token is a valid /messages start
        pages = 0
        while token is not None and pages < 20:
            page = ok(
                await bob.room_messages(room_id, start=token, limit=5), nio.RoomMessagesResponse
            )
            seen.extend(e.event_id for e in page.chunk)
            token = page.end if page.chunk else None
            pages += 1
        found = [e for e in reversed(seen) if e in early]
        assert found == early, f"paginated {seen}"

        # A edits a message; B receives the edit.
        edit_content = {
            "msgtype": "m.text",
            "body": "* hello bob (edited)",
            "m.new_content": {"msgtype": "m.text", "body": "hello bob (edited)"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": from_alice},
        }
        edit_id = ok(
            await alice.room_send(room_id, "m.room.message", edit_content), nio.RoomSendResponse
        ).event_id
        edits: list[nio.Event] = []

        def got_edit(response: nio.SyncResponse) -> bool:
            edits.extend(e for e in timeline(response, room_id) if e.event_id == edit_id)
            return bool(edits)

        await sync_until(bob, got_edit)
        relates_to = edits[0].source["content"]["m.relates_to"]
        assert relates_to == {"rel_type": "m.replace", "event_id": from_alice}
        assert edits[0].source["content"]["m.new_content"]["body"] == "hello bob (edited)"

        # A redacts another message; B sees the redaction, and the original redacted.
        redact_id = ok(
            await alice.room_redact(room_id, early[0], reason="oops"), nio.RoomRedactResponse
        ).event_id
        redactions: list[nio.RedactionEvent] = []

        def got_redaction(response: nio.SyncResponse) -> bool:
            redactions.extend(
                e for e in timeline(response, room_id) if isinstance(e, nio.RedactionEvent)
            )
            return any(e.event_id == redact_id for e in redactions)

        await sync_until(bob, got_redaction)
        assert [e.redacts for e in redactions if e.event_id == redact_id] == [early[0]]
        refetched = ok(
            await bob.room_context(room_id, early[0], limit=0), nio.RoomContextResponse
        ).event
        assert isinstance(refetched, nio.RedactedEvent), refetched
        assert "body" not in refetched.source["content"]

        # Typing and read receipts reach the other side as room ephemeral events.
        ok(await alice.room_typing(room_id, True, timeout=10_000), nio.RoomTypingResponse)

        def alice_typing(response: nio.SyncResponse) -> bool:
            return any(
                isinstance(e, nio.TypingNoticeEvent) and alice.user_id in e.users
                for e in _ephemeral(response, room_id)
            )

        await sync_until(bob, alice_typing)
        assert alice.user_id in bob.rooms[room_id].typing_users

        ok(
            await bob.room_read_markers(room_id, from_alice, read_event=from_alice),
            nio.RoomReadMarkersResponse,
        )
        ok(await bob.update_receipt_marker(room_id, from_alice), nio.UpdateReceiptMarkerResponse)

        def bob_read(response: nio.SyncResponse) -> bool:
            return any(
                isinstance(e, nio.ReceiptEvent)
                and any(r.user_id == bob.user_id and r.event_id == from_alice for r in e.receipts)
                for e in _ephemeral(response, room_id)
            )

        await sync_until(alice, bob_read)

        # A display name change shows in the room for B (B's room.user_name(A)).
        ok(await alice.set_displayname("Alice Nio"), nio.ProfileSetDisplayNameResponse)
        await sync_until(bob, lambda r: bob.rooms[room_id].user_name(alice.user_id) == "Alice Nio")
        assert bob.rooms[room_id].users[alice.user_id].display_name == "Alice Nio"

    assert "Unhandled error" not in homeserver.log()

"""Email: the mailer of the email pushers' digests when the server has an SMTP host
(``[email]``), the unsubscribe links its emails carry, and the validation of users' email
addresses (which email pushers need)."""

from __future__ import annotations

from dataclasses import dataclass

from signedjson.types import SigningKey

from peyvand.config import Config
from peyvand.services.accounts.threepids import ThreepidService, canonical_email
from peyvand.services.push.email.mailer import EmailMailer
from peyvand.services.push.email.smtp import SmtpSender
from peyvand.services.push.email.unsubscribe import (
    EmailPusherKey,
    EmailUnsubscribe,
    UnsubscribeLinks,
)
from peyvand.storage.database import Database
from peyvand.storage.pushers import PusherStore
from peyvand.storage.threepids import ThreepidStore
from peyvand.types import UserID
from peyvand.wiring.local import Local, Timeline


@dataclass(frozen=True, slots=True)
class Email:
    # None: no SMTP host configured, nothing is mailed.
    mailer: EmailMailer | None
    unsubscribe: EmailUnsubscribe
    threepids: ThreepidService


def build_email(
    config: Config, db: Database, timeline: Timeline, local: Local, signing_key: SigningKey
) -> Email:
    links = UnsubscribeLinks(signing_key, config.base_url)

    async def delete_pusher(pusher: EmailPusherKey) -> None:
        body = {"kind": None, "app_id": pusher.app_id, "pushkey": pusher.pushkey}
        await local.pushers.set_pusher(pusher.user_id, None, body)

    async def remove_email_pushers(user_id: UserID, address: str) -> None:
        for pusher in await local.pushers.get_pushers(user_id):
            if pusher["kind"] == "email" and canonical_email(pusher["pushkey"]) == address:
                body = {"kind": None, "app_id": pusher["app_id"], "pushkey": pusher["pushkey"]}
                await local.pushers.set_pusher(user_id, None, body)

    mailer = None
    sender = None
    if config.email.smtp_host is not None:
        sender = SmtpSender(config.email)
        mailer = EmailMailer(
            config.email,
            PusherStore(db),
            local.notifications,
            timeline.state,
            local.account_data.ignored_users.of,
            sender,
            links,
            lambda: timeline.notifier.current_token.events,
        )
    threepids = ThreepidService(
        ThreepidStore(db),
        email=config.email,
        sender=sender,
        base_url=config.base_url,
        on_address_removed=remove_email_pushers,
    )
    return Email(mailer, EmailUnsubscribe(links, delete_pusher), threepids)

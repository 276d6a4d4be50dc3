"""Email notifications: the mailer of the email pushers' digests when the server has an
SMTP host (``[email]``), and the unsubscribe links its emails carry."""

from __future__ import annotations

from dataclasses import dataclass

from signedjson.types import SigningKey

from peyvand.config import Config
from peyvand.services.push.email.mailer import EmailMailer
from peyvand.services.push.email.smtp import SmtpSender
from peyvand.services.push.email.unsubscribe import (
    EmailPusherKey,
    EmailUnsubscribe,
    UnsubscribeLinks,
)
from peyvand.storage.database import Database
from peyvand.storage.notifications import NotificationStore
from peyvand.storage.pushers import PusherStore
from peyvand.wiring.local import Local, Timeline


@dataclass(frozen=True, slots=True)
class Email:
    # None: no SMTP host configured, nothing is mailed.
    mailer: EmailMailer | None
    unsubscribe: EmailUnsubscribe


def build_email(
    config: Config, db: Database, timeline: Timeline, local: Local, signing_key: SigningKey
) -> Email:
    links = UnsubscribeLinks(signing_key, config.base_url)

    async def delete_pusher(pusher: EmailPusherKey) -> None:
        body = {"kind": None, "app_id": pusher.app_id, "pushkey": pusher.pushkey}
        await local.pushers.set_pusher(pusher.user_id, None, body)

    mailer = None
    if config.email.smtp_host is not None:
        mailer = EmailMailer(
            config.email,
            PusherStore(db),
            NotificationStore(db),
            timeline.state,
            local.account_data.ignored_users.of,
            SmtpSender(config.email),
            links,
            lambda: timeline.notifier.current_token.events,
        )
    return Email(mailer, EmailUnsubscribe(links, delete_pusher))

"""Sending email over SMTP with the standard library's ``smtplib``, in a worker thread
so the event loop never blocks, with a timeout on the whole session; TLS from the start
(``tls``), upgraded (``starttls``) or none, the server's certificate verified."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from peyvand.config.model import EmailConfig


class SmtpError(Exception):
    """The message could not be handed to the SMTP server."""


class SmtpSender:
    def __init__(self, config: EmailConfig) -> None:
        if config.smtp_host is None:
            raise ValueError("no SMTP host configured")
        self._host = config.smtp_host
        self._config = config

    async def send(self, message: EmailMessage) -> None:
        """Hand ``message`` to the SMTP server, or raise ``SmtpError``."""
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self._send, message), self._config.smtp_timeout
            )
        except (OSError, smtplib.SMTPException, TimeoutError) as exc:
            raise SmtpError(f"sending to {self._host}:{self._config.smtp_port}: {exc}") from exc

    def _send(self, message: EmailMessage) -> None:
        config = self._config
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if config.smtp_tls == "tls":
            smtp = smtplib.SMTP_SSL(
                self._host, config.smtp_port, timeout=config.smtp_timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(self._host, config.smtp_port, timeout=config.smtp_timeout)
        with smtp:
            if config.smtp_tls == "starttls":
                smtp.starttls(context=context)
            if config.smtp_username is not None:
                smtp.login(config.smtp_username, config.smtp_password or "")
            smtp.send_message(message)

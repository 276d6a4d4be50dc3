"""Email notifications (Client-Server API, "Push Notifications": pushers of kind
``email``, whose ``pushkey`` is the address): after a delay, a digest of the notifying
messages the user has not read meanwhile, sent over SMTP, with an unsubscribe link.

- ``unsubscribe``: the link's signed token, and the endpoint's path;
- ``digest``: the message (plain text and HTML, content escaped);
- ``smtp``: the SMTP client (standard ``smtplib`` in a thread, with a timeout);
- ``mailer``: the periodic pass over the email pushers, deciding what to send.
"""

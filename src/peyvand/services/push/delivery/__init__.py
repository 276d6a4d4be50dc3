"""Delivery of push notifications to push gateways (Push Gateway API, issue 17).

- ``payload``: the ``notification`` object of ``POST /_matrix/push/v1/notify``;
- ``pusher``: one http pusher's sequential queue, its durable progress and its retries;
- ``progress``: the pushers' positions stored in batches (one commit for many pushes);
- ``pool``: every pusher of the server, fed with the actions the push-rule evaluation
  (``services.push.actions``) kept for members with pushers, and with read receipts.

The HTTP client itself is ``federation.push_gateway`` (services never touch aiohttp).
"""

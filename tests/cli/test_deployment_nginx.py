"""``peyvand deployment nginx`` and the roles behind it (``api.roles``, issue 21): every
route is placed, the reads go to readers and nothing that writes does, each listed
pattern matches its own paths only, and one process needs no routing; with
``--federation-listen`` a second server block terminates federation TLS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peyvand.api.client import legacy_sync, sliding_sync, sync
from peyvand.api.roles import path_pattern
from peyvand.cli.deployment import FederationTls, deployment_routes, nginx_config
from peyvand.cli.errors import CommandError
from peyvand.cli.main import main
from peyvand.config.loader import load_config

CONFIG = """
server_name = "example.org"
data_dir = "."
signing_key_path = "k"
[database]
url = "{url}"
[workers]
secret_path = "s"
instances = [
  {{name = "w", roles = ["event_writer", "federation_inbound", "federation_sender"], \
port = 8101}},
  {{name = "r1", roles = ["client_reader"], port = 8102}},
  {{name = "r2", roles = ["client_reader"], port = 8103, bind = "::1"}},
  {{name = "e", roles = ["media", "background"], port = 8104}},
]
"""


def test_patterns_follow_aiohttp_templates() -> None:
    pattern = re.compile(path_pattern("/_matrix/client/v3/rooms/{roomId}/state/{eventType}"))
    assert pattern.match("/_matrix/client/v3/rooms/!a:b/state/m.room.name")
    assert not pattern.match("/_matrix/client/v3/rooms/!a:b/state/m.room.name/extra")
    rest = re.compile(path_pattern("/_matrix/client/v3/pushrules/{path:.*}"))
    assert rest.match("/_matrix/client/v3/pushrules/global/override/x")


def test_every_route_has_one_role_and_reads_only_go_to_readers() -> None:
    routes = deployment_routes()
    roles = {(r.method, r.pattern): r.role for r in routes}
    assert len(roles) == len(routes)  # each method and path placed once

    def role(method: str, path: str) -> str:
        return roles[(method, path_pattern(path))]

    client = "/_matrix/client/v3"
    assert role("GET", f"{client}/sync") == "client_reader"
    assert role("GET", "/_matrix/client/r0/sync") == "client_reader"
    assert role("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync") == (
        "client_reader"
    )
    assert role("GET", f"{client}/rooms/{{roomId}}/messages") == "client_reader"
    assert role("POST", f"{client}/search") == "client_reader"
    assert role("PUT", f"{client}/rooms/{{roomId}}/send/{{eventType}}/{{txnId}}") == "event_writer"
    assert role("POST", f"{client}/createRoom") == "event_writer"
    assert role("POST", f"{client}/keys/upload") == "event_writer"
    assert role("GET", f"{client}/presence/{{userId}}/status") == "event_writer"
    assert role("GET", "/_peyvand/client/unsubscribe") == "event_writer"
    assert role("GET", "/_matrix/client/v1/media/config") == "media"
    assert role("PUT", "/_matrix/federation/v1/send/{txnId}") == "federation_inbound"
    assert role("GET", "/_peyvand/admin/v1/audit_log") == "event_writer"
    writes = {"PUT", "POST", "DELETE"}
    readers_writing = [
        (r.method, r.pattern)
        for r in routes
        if r.role == "client_reader" and r.method in writes and "sync" not in r.pattern
    ]
    assert all(
        any(word in pattern for word in ("search", "keys/query", "publicRooms"))
        for _, pattern in readers_writing
    ), readers_writing


def test_nginx_configuration(tmp_path: Path) -> None:
    path = tmp_path / "deployment.toml"
    path.write_text(CONFIG.format(url="postgresql://p@127.0.0.1/p"))
    text = nginx_config(load_config(path), listen="127.0.0.1:9000")
    upstream = text[text.index("upstream peyvand_client_reader {") :]
    upstream = upstream[: upstream.index("}")]
    assert "server 127.0.0.1:8102" in upstream and "server [::1]:8103" in upstream
    assert "upstream peyvand_background" not in text  # leased, not routed
    assert "upstream peyvand_federation_sender" not in text
    assert "listen 127.0.0.1:9000;" in text
    assert "http.trusted_proxies" in text and "X-Forwarded-For $remote_addr;" in text
    assert "location /_peyvand/internal/ {\n        return 404;" in text
    assert "location = /_peyvand/metrics {\n        return 404;" in text
    listed = re.findall(r'^    "~\^([A-Z|():?]+) (.*)" (\w+);$', text, flags=re.M)
    assert listed and all(role != "event_writer" for _, _, role in listed)
    for method, pattern, _ in listed:
        re.compile(pattern)  # nginx's PCRE takes what Python's re takes here
        assert method in ("(?:GET|HEAD)", "HEAD", "POST", "PUT", "DELETE")


def test_nginx_lets_uploads_and_long_polls_through(tmp_path: Path) -> None:
    """Bodies up to ``media.max_upload_size`` pass nginx, its read timeout outlasts the
    longest /sync, /events or sliding sync long-poll with margin, and a timed-out request
    is never sent again to another process."""
    path = tmp_path / "deployment.toml"
    config = CONFIG.format(url="postgresql://p@127.0.0.1/p")
    config = config.replace("[database]", "max_request_size = 1000000\n[media]\n"
                            "max_upload_size = 7000000\n[database]")  # fmt: skip
    path.write_text(config)
    text = nginx_config(load_config(path), listen="127.0.0.1:9000")
    assert re.findall(r"client_max_body_size (\d+);", text) == ["7000000"]
    longest = max(sync.MAX_TIMEOUT_MS, legacy_sync.MAX_TIMEOUT_MS, sliding_sync.MAX_TIMEOUT_MS)
    (timeout,) = re.findall(r"proxy_read_timeout (\d+)s;", text)
    assert int(timeout) >= longest // 1000 + 30
    assert re.findall(r"proxy_next_upstream ([^;]*);", text) == ["error"]


def test_one_process_needs_no_routing(tmp_path: Path) -> None:
    path = tmp_path / "one.toml"
    path.write_text(CONFIG.format(url="sqlite:///x.db").split("[workers]")[0])
    with pytest.raises(CommandError, match=r"no 'workers\.instances'"):
        nginx_config(load_config(path), listen="127.0.0.1:9000")


FEDERATION = """
[federation]
enabled = true
tls_certificate_path = "certs/tls.crt"
tls_private_key_path = "certs/tls.key"
"""


def test_nginx_terminates_federation_tls(tmp_path: Path) -> None:
    path = tmp_path / "deployment.toml"
    head, workers = CONFIG.format(url="postgresql://p@127.0.0.1/p").split("[workers]")
    path.write_text(head + FEDERATION + "[workers]" + workers)
    config = load_config(path)
    tls = FederationTls(
        "127.0.0.1:8448",
        config.federation.tls_certificate_path,
        config.federation.tls_private_key_path,
    )
    text = nginx_config(config, listen="127.0.0.1:9000", federation=tls)
    plain, _, federation = text.partition("listen 127.0.0.1:8448 ssl;")
    assert federation, text
    assert "listen 127.0.0.1:9000;" in plain and "ssl_certificate" not in plain
    certs = tmp_path.resolve() / "certs"
    assert f'    ssl_certificate "{certs / "tls.crt"}";' in federation
    assert f'    ssl_certificate_key "{certs / "tls.key"}";' in federation
    # The same routing: the role map and the closed internal paths.
    assert "proxy_pass http://peyvand_$peyvand_role;" in federation
    assert "location /_peyvand/internal/ {\n        return 404;" in federation
    assert text.count('map "$request_method $uri" $peyvand_role {') == 1
    # Without a certificate, or without federation, there is nothing to terminate.
    untrusted = FederationTls("127.0.0.1:8448", None, None)
    with pytest.raises(CommandError, match="needs --tls-certificate and --tls-key"):
        nginx_config(config, listen="127.0.0.1:9000", federation=untrusted)
    path.write_text(path.read_text().replace("enabled = true", "enabled = false"))
    with pytest.raises(CommandError, match=r"needs 'federation\.enabled = true'"):
        nginx_config(load_config(path), listen="127.0.0.1:9000", federation=tls)


def test_the_command_takes_certificates_given_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deployment.toml"
    head, workers = CONFIG.format(url="postgresql://p@127.0.0.1/p").split("[workers]")
    path.write_text(head + "[federation]\nenabled = true\n[workers]" + workers)
    monkeypatch.chdir(tmp_path)
    command = ["deployment", "nginx", "--config", str(path), "--listen", "127.0.0.1:9000"]
    given = ["--tls-certificate", "edge.crt", "--tls-key", "edge.key"]
    assert main([*command, "--federation-listen", "[::1]:8448", *given]) == 0
    printed = capsys.readouterr().out
    assert "    listen [::1]:8448 ssl;" in printed
    assert f'    ssl_certificate "{tmp_path.resolve() / "edge.crt"}";' in printed
    assert f'    ssl_certificate_key "{tmp_path.resolve() / "edge.key"}";' in printed
    assert main([*command, *given]) == 1
    assert "go with --federation-listen" in capsys.readouterr().err

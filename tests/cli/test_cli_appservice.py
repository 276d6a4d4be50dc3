"""``peyvand appservice list|check`` and the registration checks of ``peyvand serve``,
as an operator runs them (``python -m peyvand`` in a child process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.appservice import write_registration
from harness.server import HomeserverProcess


def peyvand(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peyvand", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def bridge(path: Path, name: str, **extra: Any) -> Path:
    return write_registration(
        path,
        appservice_id=name,
        url="http://127.0.0.1:9",
        as_token=f"{name}-as",
        hs_token=f"{name}-hs",
        sender_localpart=f"{name}bot",
        user_regex=f"@{name}_.*:localhost",
        alias_regex=f"#{name}_.*:localhost",
        **extra,
    )


def test_list_and_check_show_what_the_server_loads(tmp_path: Path) -> None:
    server = HomeserverProcess("sqlite", tmp_path)
    telegram = bridge(tmp_path / "telegram.yaml", "telegram", receive_ephemeral=True)
    signal_bridge = bridge(
        tmp_path / "signal.yaml",
        "signal",
        protocols=["signal"],
        ip_range_whitelist=["10.0.0.0/8"],
    )
    server.configure({"app_service_config_files": f'["{telegram}", "{signal_bridge}"]'})

    listed = peyvand("appservice", "list", "--config", server.config_path)
    assert listed.returncode == 0, listed.stderr
    assert f"telegram: {telegram}" in listed.stdout
    assert "bot: @telegrambot:localhost" in listed.stdout
    assert "users @telegram_.*:localhost (exclusive)" in listed.stdout
    assert "features: rate-limited, ephemeral" in listed.stdout
    assert "protocols: signal" in listed.stdout
    assert "as_token accepted from: 10.0.0.0/8" in listed.stdout

    checked = peyvand("appservice", "check", "--config", server.config_path)
    assert checked.returncode == 0, checked.stderr
    assert "2 registration(s) OK: telegram, signal" in checked.stdout


def test_check_names_the_file_and_the_problem(tmp_path: Path) -> None:
    server = HomeserverProcess("sqlite", tmp_path)
    first = bridge(tmp_path / "a.yaml", "telegram")
    clash = write_registration(
        tmp_path / "b.yaml",
        appservice_id="other",
        url=None,
        as_token="telegram-as",
        hs_token="other-hs",
        sender_localpart="otherbot",
        user_regex="@other_.*",
    )
    result = peyvand("appservice", "check", "--config", server.config_path, first, clash)
    assert result.returncode == 1
    assert f"{clash}: 'as_token' is the same as in {first}" in result.stderr

    bad_regex = bridge(tmp_path / "c.yaml", "bad", namespaces={"users": [{"exclusive": True}]})
    result = peyvand("appservice", "check", "--config", server.config_path, bad_regex)
    assert result.returncode == 1
    assert "'namespaces.users[0]'.regex must be a non-empty string" in result.stderr


def test_serve_refuses_a_bad_registration(tmp_path: Path) -> None:
    server = HomeserverProcess("sqlite", tmp_path)
    missing = tmp_path / "absent.yaml"
    server.configure({"app_service_config_files": f'["{missing}"]'})
    result = subprocess.run(
        [sys.executable, "-m", "peyvand", "serve", "--config", str(server.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert f"application service registration: {missing}: cannot be read" in result.stderr

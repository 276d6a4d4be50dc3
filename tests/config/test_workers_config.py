"""The ``[workers]`` table (issue 21): a deployment's processes in one shared file, each
started with ``--worker NAME``; SQLite refuses it; every role needs a process; the
generated file documents it and loads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from peyvand.config.loader import ConfigError, as_worker, load_config, render_config

BASE = """
server_name = "example.org"
data_dir = "data"
signing_key_path = "data/signing.key"

[database]
url = "{url}"
"""

DEPLOYMENT = """
[workers]
secret_path = "workers.secret"
instances = [
  {{name = "writer1", roles = ["event_writer", "federation_inbound", "federation_sender"], \
port = 8101}},
  {{name = "jobs", roles = ["background"], port = 8102}},
  {{name = "reader", roles = ["client_reader"], port = 8103, bind = "::1"}},
  {{name = "edge", roles = ["media", "background"], port = 8104}},
]
{extra}
"""

POSTGRES = "postgresql://peyvand@127.0.0.1:5432/peyvand"


def write(tmp_path: Path, url: str = POSTGRES, extra: str = "") -> Path:
    path = tmp_path / "peyvand.toml"
    path.write_text(BASE.format(url=url) + DEPLOYMENT.format(extra=extra))
    return path


def test_one_process_does_everything_by_default(tmp_path: Path) -> None:
    path = tmp_path / "one.toml"
    path.write_text(BASE.format(url="sqlite:///data/homeserver.db"))
    config = load_config(path)
    assert not config.workers.enabled
    assert config.workers.has_role("event_writer") and config.workers.has_role("media")
    assert as_worker(config, None) == config
    with pytest.raises(ConfigError, match=r"no 'workers\.instances'"):
        as_worker(config, "writer1")


def test_each_process_takes_its_instance(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    assert config.workers.enabled
    assert config.workers.secret_path == tmp_path.resolve() / "workers.secret"
    assert [i.name for i in config.workers.with_role("background")] == ["jobs", "edge"]
    with pytest.raises(ConfigError, match="name one with --worker"):
        as_worker(config, None)
    with pytest.raises(ConfigError, match="no instance is named 'nobody'"):
        as_worker(config, "nobody")
    reader = as_worker(config, "reader")
    assert (reader.bind, reader.port) == ("::1", 8103)
    this = reader.workers.this
    assert this is not None and this.url == "http://[::1]:8103"
    assert reader.workers.has_role("client_reader")
    assert not reader.workers.has_role("event_writer")
    writer = as_worker(config, "writer1")
    assert writer.workers.has_role("event_writer") and not writer.workers.has_role("media")


def test_the_file_may_name_its_process(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, extra='instance = "edge"'))
    assert as_worker(config, None).port == 8104
    assert as_worker(config, "jobs").port == 8102  # --worker wins


@pytest.mark.parametrize(
    ("url", "extra", "message"),
    [
        ("sqlite:///data/homeserver.db", "", "needs PostgreSQL: the embedded SQLite"),
        (POSTGRES, 'instance = "ghost"', "no instance is named 'ghost'"),
    ],
)
def test_refused_deployments(tmp_path: Path, url: str, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, url, extra))


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ('{name = "a", roles = ["event_writer"], port = 1}', "no process has the role"),
        ('{name = "a b", roles = ["event_writer"], port = 1}', r"instances\[0\].name"),
        ('{name = "a", roles = [], port = 1}', "at least one role"),
        ('{name = "a", roles = ["writer"], port = 1}', "unknown role 'writer'"),
        ('{name = "a", roles = ["media"], port = 0}', "between 1 and 65535"),
        (
            '{name = "a", roles = ["media"], port = 1}, {name = "a", roles = ["media"], port = 2}',
            "named twice",
        ),
        (
            '{name = "a", roles = ["media"], port = 1}, {name = "b", roles = ["media"], port = 1}',
            "another's address",
        ),
    ],
)
def test_refused_instances(tmp_path: Path, instances: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        BASE.format(url=POSTGRES) + f'[workers]\nsecret_path = "s"\ninstances = [{instances}]\n'
    )
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_deployment_needs_its_secret_and_no_tls_listener(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    text = write(tmp_path).read_text()
    path.write_text(text.replace('secret_path = "workers.secret"\n', ""))
    with pytest.raises(ConfigError, match=r"'workers\.secret_path' is required"):
        load_config(path)
    path.write_text(
        text.replace(
            "[workers]",
            '[federation]\nport = 8448\ntls_certificate_path = "c"\ntls_private_key_path = "k"\n\n'
            "[workers]",
        )
    )
    with pytest.raises(ConfigError, match=r"'federation\.port' must be unset"):
        load_config(path)


def test_several_event_writers_share_the_positions(tmp_path: Path) -> None:
    """Several event writers (issue 21): each allocates in its own lane, in configured
    order; a process that writes no events has them all."""
    path = tmp_path / "writers.toml"
    path.write_text(
        BASE.format(url=POSTGRES).replace(
            "[database]", "[federation]\nenabled = false\n\n[database]"
        )
        + '[workers]\nsecret_path = "s"\ninstances = ['
        '{name = "w1", roles = ["event_writer", "federation_inbound", "federation_sender"],'
        ' port = 1}, {name = "w2", roles = ["event_writer", "background"], port = 2},'
        ' {name = "r", roles = ["client_reader", "media"], port = 3}]\n'
    )
    config = load_config(path)
    assert [as_worker(config, name).workers.writer_lane for name in ("w1", "w2", "r")] == [
        (0, 2),
        (1, 2),
        (0, 1),
    ]
    assert config.workers.writer_lane == (0, 1)
    # With federation too, and the federation roles away from the writers.
    path.write_text(
        path.read_text()
        .replace("enabled = false", "enabled = true")
        .replace('"event_writer", "federation_inbound", "federation_sender"', '"event_writer"')
        .replace('"client_reader", "media"', '"client_reader", "media", "federation_inbound", '
                 '"federation_sender"')
    )  # fmt: skip
    assert [i.roles for i in load_config(path).workers.instances][2] == (
        "client_reader", "media", "federation_inbound", "federation_sender",
    )  # fmt: skip


def test_at_most_sixteen_event_writers(tmp_path: Path) -> None:
    """Rooms are shared by the first character of their ID: more writers than 16 would
    leave some with no room of their own."""
    writers = ", ".join(
        f'{{name = "w{i}", roles = ["event_writer"], port = {1000 + i}}}' for i in range(17)
    )
    path = tmp_path / "many.toml"
    path.write_text(
        BASE.format(url=POSTGRES)
        + '[workers]\nsecret_path = "s"\ninstances = ['
        + writers
        + ', {name = "rest", roles = ["client_reader", "federation_inbound",'
        ' "federation_sender", "media", "background"], port = 999}]\n'
    )
    with pytest.raises(ConfigError, match="at most 16 processes"):
        load_config(path)


def test_rendered_deployment_loads_back(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    rendered = tmp_path / "rendered.toml"
    rendered.write_text(render_config(config, config_path=rendered))
    assert load_config(rendered) == config

"""scripts/conformance reads sytest's TAP and progress output into keyed results, and
checks them against the expected list (without running sytest: ``--from`` a saved run);
it loads sytest's application service registrations into the server before sytest goes on
(scripts/sytest_appservices.py, against a real server)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

from harness.appservice import write_registration
from harness.server import running_homeserver

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "conformance.py"


@pytest.fixture(scope="module")
def conformance() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conformance", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["conformance"] = module  # dataclasses look their module up
    sys.path.insert(0, str(SCRIPT.parent))  # its sibling sytest_appservices, as when run
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


PROGRESS = """\
tests/10apidoc/01register.pl:
    Test 1 GET /register yields a set of flows... Certificate request self-signature ok
subject=CN = localhost
OK
    Test 2 POST /register rejects registration of usernames with '\xa3'... OK
tests/31sync/10archived-ban.pl:
    Test 3 Newly banned rooms appear in the leave section of incremental sync... OK
WARN: something
    Test 4 Newly banned rooms appear in the leave section of incremental sync... FAIL
    Test 5 Archived rooms only contain history from before the user left... SKIP
tests/61push/02add_rules.pl:
    Test 6 Can add global push rule for room... OK
    Test 7 Existing members see new members' join events... FAIL
"""

TAP = """\
# Started server-0
ok 1 GET /register yields a set of flows
ok 2 POST /register rejects registration of usernames with '\u00a3'
  ok 1 Created a room (Newly banned rooms appear in the leave section of incremental sync)
  1..1
ok 3 Newly banned rooms appear in the leave section of incremental sync (3 subtests)
not ok 4 Newly banned rooms appear in the leave section of incremental sync
# Started: 2026-12-04 15:19:37.753
# Expected to receive an HTTP 400 failure
ok 5 Archived rooms only contain history from before the user left # skip no guests
ok 6 (expected fail) Can add global push rule for room # TODO passed but expected fail
not ok 7 Existing members see new members' join events
1..7
"""


def save_run(directory: Path, tap: str = TAP, progress: str = PROGRESS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sytest.tap").write_text(tap, encoding="utf-8")
    (directory / "sytest.log").write_bytes(progress.encode("latin-1"))
    return directory


def test_tap_results_are_keyed_by_file_and_name(conformance: ModuleType, tmp_path: Path) -> None:
    run = save_run(tmp_path)
    outcome = conformance.read_outcome(run / "sytest.tap", run / "sytest.log")
    ban = "tests/31sync/10archived-ban.pl: Newly banned rooms appear in the leave section"
    assert outcome.results == {
        "tests/10apidoc/01register.pl: GET /register yields a set of flows": "pass",
        "tests/10apidoc/01register.pl: POST /register rejects registration of usernames "
        "with '\u00a3'": "pass",
        f"{ban} of incremental sync": "pass",
        f"{ban} of incremental sync [2]": "fail",
        "tests/31sync/10archived-ban.pl: Archived rooms only contain history from before "
        "the user left": "skip",
        "tests/61push/02add_rules.pl: Can add global push rule for room": "pass",
        "tests/61push/02add_rules.pl: Existing members see new members' join events": "fail",
    }
    assert outcome.complete


def test_the_files_left_alone_run_in_a_process_of_their_own(
    conformance: ModuleType, tmp_path: Path
) -> None:
    """run-sytest's selection, with the push file whose leftovers break later tests of
    its process (``ALONE``) split off, and two runs' results merged."""
    sytest = tmp_path / "sytest"
    for name in ("a.pl", "61push/01message-pushed.pl", "50federation/f.pl", "80torture/t.pl"):
        (sytest / "tests" / name).parent.mkdir(parents=True, exist_ok=True)
        (sytest / "tests" / name).write_text("", encoding="utf-8")
    files = conformance.all_files(sytest)
    assert files == ["tests/61push/01message-pushed.pl", "tests/a.pl"]
    assert conformance.split_alone(files) == (
        ["tests/a.pl"],
        ["tests/61push/01message-pushed.pl"],
    )
    assert conformance.split_alone(files[:1]) == (files[:1], [])
    first = conformance.Outcome({"tests/a.pl: x": "pass"}, 1)
    second = conformance.Outcome({"tests/61push/01message-pushed.pl: y": "fail"}, 1)
    merged = first.merged(second)
    assert merged.results == {**first.results, **second.results} and merged.complete
    assert not first.merged(conformance.Outcome({}, None)).complete


def test_check_fails_on_a_regression_and_adds_new_passes(
    conformance: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = save_run(tmp_path / "run")
    expected = tmp_path / "expected.txt"
    regressed = "tests/61push/02add_rules.pl: Existing members see new members' join events"
    expected.write_text(
        f"tests/10apidoc/01register.pl: GET /register yields a set of flows\n{regressed}\n"
    )

    status = conformance.main(["--from", str(run), "--expected", str(expected)])

    output = capsys.readouterr().out
    assert status == 1
    assert f"REGRESSIONS: expected to pass, did not (1):\n  {regressed}\n" in output
    assert output.endswith("4 passed, 1 failed\n")
    listed = expected.read_text().splitlines()
    assert listed == sorted(listed) and len(listed) == 5  # the 3 new passes were added
    assert "tests/61push/02add_rules.pl: Can add global push rule for room" in listed


def test_update_rewrites_the_list_and_an_unfinished_run_fails(
    conformance: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = tmp_path / "expected.txt"
    expected.write_text("tests/99gone.pl: a test that no longer passes\n")
    run = save_run(tmp_path / "run")
    assert conformance.main(["--from", str(run), "--expected", str(expected), "--update"]) == 0
    assert len(expected.read_text().splitlines()) == 4
    assert capsys.readouterr().out.endswith("4 passed, 0 failed\n")

    cut = save_run(tmp_path / "cut", tap=TAP.replace("1..7\n", ""))
    assert conformance.main(["--from", str(cut), "--expected", str(expected)]) == 1
    assert "sytest did not finish" in capsys.readouterr().out


def test_sytest_registrations_are_loaded_while_sytest_waits(
    conformance: ModuleType, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    appservices = sys.modules["sytest_appservices"]
    placeholders = appservices.write_placeholders(tmp_path / "placeholders")
    options = {"app_service_config_files": json.dumps([str(path) for path in placeholders])}
    with running_homeserver("sqlite", request, tmp_path / "server", options=options) as server:
        # What sytest's tests/05homeserver.pl writes (its tokens are chr(64..126)).
        written = tmp_path / "sytest-tmp" / "tmp.a1b2c3" / "server-0"
        written.mkdir(parents=True)
        as_tokens = ["n`HnFe\\^QmLVd{Tz[CSqOf@i~gcZ{qjr", "zX]y[lPuxW~HxG[[eTaRIfqLxkhy@Gs]"]
        for index, as_token in enumerate(as_tokens):
            write_registration(
                written / f"appserv-{index}.yaml",
                appservice_id=f"AS-{index + 1}",
                url=f"https://localhost:1/appservs/{index + 1}",
                as_token=as_token,
                hs_token=f"hs-token-{index}",
                sender_localpart=f"as-user-{index + 1}",
                user_regex=f"@astest{index}-.*",
            )
        sytest = subprocess.Popen(["sleep", "60"], start_new_session=True)
        try:
            copier = appservices.RegistrationCopier(
                tmp_path / "sytest-tmp", placeholders, server.pid, server.base_url, limit=30
            )
            copier.watch(sytest.pid)
            copier.join(60)
            state = Path(f"/proc/{sytest.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        finally:
            sytest.kill()
            sytest.wait()
        assert copier.loaded
        assert state != "T"  # sytest goes on once the server has them
        whoami = urllib.request.Request(
            f"{server.base_url}/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {as_tokens[0]}"},
        )
        with urllib.request.urlopen(whoami, timeout=10) as response:
            assert json.load(response)["user_id"] == f"@as-user-1:{server.server_name}"

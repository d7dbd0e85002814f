"""The console script: the demo on fakeredis, show/list against a real server, and how it
fails: one `redis-checkpoint: ` line on stderr, never a traceback or a password."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest
from redis.exceptions import ResponseError

from redis_checkpoint import PersistedTrace, cli
from redis_checkpoint.cli import main
from redis_checkpoint.conformance.servers import ServerProcess, free_port

from .conftest import fresh_prefix


def test_demo_crashes_then_resumes_to_completion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "CRASH: worker died while running step 3" in out
    kept, final = out.split("Final trace:")
    assert "completion open" in kept and "charge payment  {" not in kept
    assert "-> next_step 3" in out
    assert "completion Success  resumed_from_step 2" in final
    rows = re.findall(r"^(\d)\s+(Enter|Next)\s", final, re.MULTILINE)
    assert rows == [("0", "Enter"), ("1", "Next"), ("2", "Next"), ("3", "Enter"),
                    ("3", "Next"), ("4", "Next"), ("5", "Next")]  # fmt: skip


def test_show_and_list_on_a_real_server(
    redis_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--url", redis_server.url, "--prefix", fresh_prefix()]
    assert main([*base, "demo"]) == 0
    trace_id = re.search(r"pipeline (order-\w+)", capsys.readouterr().out).group(1)  # type: ignore[union-attr]
    assert main([*base, "show", trace_id, "--json"]) == 0
    trace = PersistedTrace.model_validate_json(capsys.readouterr().out)
    assert trace.completion is not None and len(trace.events) == 7
    assert main([*base, "list", "--json"]) == 0
    [summary] = json.loads(capsys.readouterr().out)
    assert (summary["trace_id"], summary["events"], summary["completion"]) == (
        trace_id,
        7,
        "Success",
    )
    assert main([*base, "list"]) == 0
    assert re.search(rf"^{trace_id}\s+OrderPipeline\s+7\s+Success", capsys.readouterr().out, re.M)
    assert main([*base, "show", "missing"]) == 1


def test_unreachable_server_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from redis_checkpoint.conformance.servers import free_port

    assert main(["--url", f"redis://127.0.0.1:{free_port()}/0", "list"]) == 2
    assert "Redis unreachable" in capsys.readouterr().err


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the CLI wrote to stderr (asserting there is exactly one, and no traceback)."""
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    [line] = err.splitlines()
    assert line.startswith("redis-checkpoint: ")
    return line


def test_port_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "redis://127.0.0.1:99999/0", "list"]) == 2
    assert "invalid URL redis://127.0.0.1:99999/0: Port out of range" in error_line(capsys)


def test_db_index_out_of_range_is_one_line(
    redis_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", f"redis://127.0.0.1:{redis_server.port}/99999", "list"]) == 2
    assert "DB index is out of range" in error_line(capsys)


@pytest.mark.parametrize("path", ["/abc", "/-1", "/0/1", "/1x"])
def test_a_db_that_is_not_a_number_is_refused(
    path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", f"redis://127.0.0.1:{free_port()}{path}", "list"]) == 2
    assert f"the path must be a database number such as /0, not {path!r}" in error_line(capsys)


def test_a_closed_stdout_pipe_ends_quietly() -> None:
    # The reading end is closed before the child starts, so its first write of the demo
    # (on the final flush) fails with EPIPE: `| head` that exits early, without the race.
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "wb") as stdout:
        child = subprocess.run(
            [sys.executable, "-m", "redis_checkpoint", "demo"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert child.returncode in (0, 141)
    assert b"Traceback" not in child.stderr and b"Exception ignored" not in child.stderr
    assert child.stderr == b""


@pytest.mark.parametrize(
    "exc",
    [
        OSError(28, "No space left on device"),
        ResponseError("ERR something\nsecond line"),
        ValueError("bad value"),
        RuntimeError(),
    ],
)
def test_any_unexpected_error_is_one_line(
    exc: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def failing_demo(store: object) -> None:
        raise exc

    monkeypatch.setattr(cli, "demo", failing_demo)
    assert main(["demo"]) == 2
    line = error_line(capsys)
    assert line.startswith(f"redis-checkpoint: {type(exc).__name__}")
    assert " ".join(str(exc).split()) in line


def test_interrupt_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def interrupted_demo(store: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "demo", interrupted_demo)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == ""


def test_version_and_python_dash_m(capsys: pytest.CaptureFixture[str]) -> None:
    expected = f"redis-checkpoint {version('redis-checkpoint')}\n"
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out == expected
    command = [sys.executable, "-m", "redis_checkpoint", "--version"]
    child = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (child.returncode, child.stdout, child.stderr) == (0, expected, "")


def test_a_missing_trace_is_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "missing"]) == 1
    assert error_line(capsys) == "redis-checkpoint: trace missing not found"


def test_a_password_is_never_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://user:se%40cret@127.0.0.1:{free_port()}/0"  # the password is se@cret
    monkeypatch.setenv("REDIS_CHECKPOINT_URL", url)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "redis://user:***@127.0.0.1" in capsys.readouterr().out
    assert main(["list"]) == 2  # nothing listens there
    assert "cret" not in error_line(capsys)
    for bad in ("http://user:secret@host/0", "redis://user:secret@host:99x/0"):
        assert main(["--url", bad, "list"]) == 2
        line = error_line(capsys)
        assert "secret" not in line and "user:***@host" in line
    with pytest.raises(SystemExit):
        main(["list", "redis://user:secret@host/0"])  # a stray argument argparse refuses
    assert "secret" not in capsys.readouterr().err

    async def leaky_demo(store: object) -> None:  # a driver error quoting the URL or password
        raise ConnectionError(f"AUTH se@cret failed for {url} and redis://u:secret@h")

    monkeypatch.setattr(cli, "demo", leaky_demo)
    assert main(["demo"]) == 2
    assert "cret" not in error_line(capsys)


def test_list_stops_at_the_limit(
    redis_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--url", redis_server.url, "--prefix", fresh_prefix()]
    for _ in range(3):
        assert main([*base, "demo"]) == 0
    capsys.readouterr()
    assert main([*base, "list", "--limit", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main([*base, "list", "--limit", "2"]) == 0
    assert len(re.findall(r"^order-", capsys.readouterr().out, re.M)) == 2

"""The console script: the demo on fakeredis, and show/list against a real server."""

from __future__ import annotations

import json
import re

import pytest

from redis_checkpoint import PersistedTrace
from redis_checkpoint.cli import main
from redis_checkpoint.conformance.servers import ServerProcess

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

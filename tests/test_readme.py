"""The README's Python examples run as printed: docs that match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_event_store_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    [example] = [e for e in examples() if "RedisEventStore" in e]
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "fenced: 0 1"
    assert printed[1] == "[TimerId(kind='Named', value='reminder')]"
    assert "status=<WorkflowStatus.COMPLETED: 'Completed'>" in printed[2]
    assert printed[3].startswith("[WorkflowCompleted(envelope=EventEnvelope(seq=2,")


def test_tiered_example_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    [example] = [e for e in examples() if "TieredPersistenceStore" in e]
    monkeypatch.chdir(tmp_path)  # its SQLite file, sqlite:///checkpoints.db, lands here
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.splitlines() == ["1", "0"]
    assert (tmp_path / "checkpoints.db").exists()

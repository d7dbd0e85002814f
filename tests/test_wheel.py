"""The Lua scripts travel with the wheel: build it, install it into a fresh virtual
environment, and run both stores on fakeredis from there."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SMOKE = textwrap.dedent(
    """
    import asyncio, sys
    import redis_checkpoint
    from redis_checkpoint import PersistenceEnvelope, RedisPersistenceStore
    from redis_checkpoint.scripts import LUA_DIR
    from redis_checkpoint.events import RedisEventStore, WriteToken
    from redis_checkpoint.conformance.aion import started
    from uuid import UUID

    assert redis_checkpoint.__file__.startswith(sys.prefix), redis_checkpoint.__file__
    assert str(LUA_DIR).startswith(sys.prefix), LUA_DIR

    async def main():
        async with RedisPersistenceStore.from_url("fakeredis://") as store:
            await store.append(PersistenceEnvelope(trace_id="w", circuit="c",
                schematic_version="1", step=1, outcome_kind="Next", timestamp_ms=1))
            trace = await store.load("w")
            print("loaded", len(trace.events), trace.events[0].step)
        async with RedisEventStore.from_url("fakeredis://") as events:
            wf = UUID(int=1)
            await events.append(WriteToken.recorder(), wf, [started(1, wf)], 0)
            print("history", len(await events.read_history(wf)))

    asyncio.run(main())
    """
)


def test_wheel_ships_the_scripts_and_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-q", "-w", str(dist), str(ROOT)], check=True)
    [wheel] = dist.glob("redis_checkpoint-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    lua = sorted(Path(name).name for name in names if name.startswith("redis_checkpoint/lua/"))
    assert lua == sorted(p.name for p in (ROOT / "lua").glob("*.lua"))
    assert "redis_checkpoint/py.typed" in names

    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*install, "--no-deps", "--no-index", str(wheel)], check=True)
    # The dependencies (redis, msgpack, pydantic, fakeredis) come from the test
    # environment, behind the fresh one's own site-packages, so the wheel's copy wins.
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run(
        [python, "-c", SMOKE], cwd=tmp_path, check=True, capture_output=True, text=True
    )
    assert result.stdout.split("\n")[:2] == ["loaded 1 1", "history 1"]

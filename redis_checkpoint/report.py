"""What `check()` tells about the server a store runs on, and what it warns of: a setting
that the server cannot keep (more replicas asked for than it has, fsync without an AOF), a
replica taking writes, persistence off."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import RedisError

from .scripts import Durability


async def server_report(
    redis: Redis | RedisCluster, durability: Durability, budget: float
) -> dict[str, Any]:
    """The server's name, version, role, connected replicas and AOF state, and warnings; for
    a cluster, the same of every primary under `primaries` (the top level then holds the
    least of them: the fewest replicas, AOF only if all have it) and the cluster's state. A
    primary that does not answer within `budget` seconds is reported so, not waited for."""
    if type(redis).__module__.startswith("fakeredis"):
        info: dict[str, Any] = {"server_name": "fakeredis", "redis_version": "in-process"}
        return _report(info, durability)
    if not isinstance(redis, RedisCluster):
        return _report(await redis.info("server", "replication", "persistence"), durability)
    nodes = sorted(redis.get_primaries(), key=lambda node: node.name)
    primaries = await asyncio.gather(*(_primary(redis, n, durability, budget) for n in nodes))
    answered = [p for p in primaries if "error" not in p] or [{"server": "?", "version": "?"}]
    report = {
        **{key: answered[0][key] for key in ("server", "version")},
        "replicas": durability.replicas,
        "fsync": durability.fsync,
        "role": "master" if all(p.get("role") == "master" for p in primaries) else "mixed",
        "replicas_connected": min(p.get("replicas_connected", 0) for p in primaries),
        "appendonly": all(p.get("appendonly") for p in primaries),
        "cluster_state": "ok" if all(p.get("cluster_state") == "ok" for p in primaries) else "fail",
        "primaries": primaries,
    }
    found = [f"{p['node']}: {warning}" for p in primaries for warning in p.pop("warnings")]
    if report["cluster_state"] != "ok":
        found.insert(0, "the cluster's state is not ok: calls to its failed slots fail")
    report["warnings"] = found
    return report


async def _primary(
    redis: RedisCluster, node: ClusterNode, durability: Durability, budget: float
) -> dict[str, Any]:
    """One primary's report, or its error."""
    try:
        async with asyncio.timeout(budget):
            info = await redis.info("server", "replication", "persistence", target_nodes=node)
            state: Any = await redis.cluster_info(target_nodes=node)
    except (RedisError, OSError, TimeoutError) as exc:
        why = f"did not answer: {exc or type(exc).__name__}"
        return {"node": node.name, "error": why, "warnings": [why]}
    return {"node": node.name, **_report(info, durability), "cluster_state": state["cluster_state"]}


def _report(info: dict[str, Any], durability: Durability) -> dict[str, Any]:
    report = {
        "server": str(info.get("server_name") or "redis"),
        "version": str(info.get("valkey_version") or info.get("redis_version", "?")),
        "role": str(info.get("role", "master")),
        "replicas_connected": int(info.get("connected_slaves", 0)),
        "appendonly": bool(info.get("aof_enabled", 0)),
        "replicas": durability.replicas,
        "fsync": durability.fsync,
    }
    report["warnings"] = warnings(report, persistent="aof_enabled" in info)
    return report


def warnings(report: dict[str, Any], persistent: bool) -> list[str]:
    """What in `report` a user of the store should hear about."""
    found = []
    if report["role"] != "master":
        found.append(f"the server is a {report['role']}: writes fail (READONLY)")
    if report["replicas"] > report["replicas_connected"]:
        found.append(
            f"replicas={report['replicas']}, but {report['replicas_connected']} replicas are "
            "connected: writes raise NotReplicated"
        )
    if report["fsync"] and not _has_waitaof(report):
        found.append(f"fsync=True, but {report['server']} {report['version']} has no WAITAOF")
    if report["fsync"] and not report["appendonly"]:
        found.append("fsync=True, but appendonly is off: writes raise NotReplicated")
    elif persistent and not report["appendonly"]:
        found.append("appendonly is off: a restart loses what the last snapshot does not hold")
    return found


def _has_waitaof(report: dict[str, Any]) -> bool:
    """WAITAOF came with Redis 7.2 (and every Valkey)."""
    if report["server"] != "redis":
        return True
    major, minor, *_ = (
        int(part) if part.isdigit() else 0 for part in f"{report['version']}.0.0".split(".")
    )
    return (major, minor) >= (7, 2)

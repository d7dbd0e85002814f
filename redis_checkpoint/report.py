"""What `check()` tells about the server a store runs on, and what it warns of: a setting
that the server cannot keep (more replicas asked for than it has, fsync without an AOF), a
replica taking writes, persistence off."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis, RedisCluster

from .scripts import Durability


async def server_report(redis: Redis | RedisCluster, durability: Durability) -> dict[str, Any]:
    """The server's name, version, role, connected replicas and AOF state, and warnings; for
    a cluster, the same of every primary under `primaries` (the top level then holds the
    least of them: the fewest replicas, AOF only if all have it) and the cluster's state."""
    if type(redis).__module__.startswith("fakeredis"):
        info: dict[str, Any] = {"server_name": "fakeredis", "redis_version": "in-process"}
        return _report(info, durability)
    if not isinstance(redis, RedisCluster):
        return _report(await redis.info("server", "replication", "persistence"), durability)
    sections = ("server", "replication", "persistence", "cluster")
    infos = await redis.info(*sections, target_nodes=RedisCluster.PRIMARIES)
    states: Any = await redis.cluster_info(target_nodes=RedisCluster.PRIMARIES)  # by node
    primaries = [
        {"node": name, **_report(info, durability), "cluster_state": states[name]["cluster_state"]}
        for name, info in sorted(infos.items())
    ]
    first = primaries[0]
    report = {
        **{key: first[key] for key in ("server", "version", "replicas", "fsync")},
        "role": "master" if all(p["role"] == "master" for p in primaries) else "mixed",
        "replicas_connected": min(p["replicas_connected"] for p in primaries),
        "appendonly": all(p["appendonly"] for p in primaries),
        "cluster_state": "ok" if all(p["cluster_state"] == "ok" for p in primaries) else "fail",
        "primaries": primaries,
    }
    found = [f"{p['node']}: {warning}" for p in primaries for warning in p.pop("warnings")]
    if report["cluster_state"] != "ok":
        found.insert(0, "the cluster's state is not ok: calls to its failed slots fail")
    report["warnings"] = found
    return report


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

"""Deployed packages and their routes on Redis: small and global, so they live under one
hash tag of their own, `{<prefix>:pkg}`."""

from __future__ import annotations

import json

from ..client import RedisBacked, pairs, reading, writing
from ..keys import shard_tag
from . import arguments
from .encoding import from_micros, micros
from .records import PackageRecord, PackageRouteRecord

check = arguments.check


class Packages(RedisBacked):
    """`PackageStore` on Redis."""

    def _package_keys(self) -> tuple[str, str, str]:
        tag = shard_tag(self.prefix, "pkg")
        return f"{tag}:archives", f"{tag}:deployed", f"{tag}:routes"

    @writing
    async def put_package(self, record: PackageRecord) -> None:
        """See `PackageStore.put_package`: archive and route in one script."""
        check.instance(record, PackageRecord, "record")
        field = _package_field(record.workflow_type, record.content_hash)
        deployed = micros(record.deployed_at)
        args = [field, record.archive, deployed, record.workflow_type, record.content_hash]
        await self._script("put_package", self._package_keys(), args)

    @reading
    async def list_packages(self) -> list[PackageRecord]:
        """See `PackageStore.list_packages`."""
        archives_key, deployed_key, _ = self._package_keys()
        archives, deployed = await self._commands(
            [("HGETALL", archives_key), ("HGETALL", deployed_key)]
        )
        times = dict(pairs(deployed))
        records = []
        for field, archive in pairs(archives):
            with self.decoding(archives_key):
                workflow_type, content_hash = json.loads(field)
                records.append(
                    PackageRecord(
                        workflow_type=workflow_type,
                        content_hash=content_hash,
                        archive=archive,
                        deployed_at=from_micros(int(times[field])),
                    )
                )
        return sorted(records, key=PackageRecord.sort_key)

    @writing
    async def delete_package(self, workflow_type: str, content_hash: str) -> None:
        """See `PackageStore.delete_package`: idempotent; routes are left alone."""
        field = _package_field(workflow_type, content_hash)
        await self._script("delete_package", self._package_keys()[:2], [field])

    @writing
    async def put_package_route(self, workflow_type: str, content_hash: str) -> None:
        """See `PackageStore.put_package_route`: one hash field."""
        route = check.text(workflow_type, "workflow_type")
        target = check.text(content_hash, "content_hash")
        await self._command("HSET", self._package_keys()[2], route, target)

    @reading
    async def list_package_routes(self) -> list[PackageRouteRecord]:
        """See `PackageStore.list_package_routes`."""
        key = self._package_keys()[2]
        [routes] = await self._commands([("HGETALL", key)])
        with self.decoding(key):
            found = [
                PackageRouteRecord(workflow_type=t.decode(), content_hash=h.decode())
                for t, h in pairs(routes)
            ]
        return sorted(found, key=lambda r: r.workflow_type)


def _package_field(workflow_type: str, content_hash: str) -> str:
    """One hash field per `(type, hash)`: a JSON array, unambiguous for any two strings."""
    pair = [check.text(workflow_type, "workflow_type"), check.text(content_hash, "content_hash")]
    return json.dumps(pair, ensure_ascii=False)

"""`redis-checkpoint`: a crash-and-resume demo, and a look at what a store holds.

Errors are one `redis-checkpoint: ...` line on stderr (passwords shown as ***): exit status
2, or 1 for a trace that is not there. Also `python -m redis_checkpoint`.

redis-checkpoint demo                  # on fakeredis:// (in-process, no server)
redis-checkpoint --url redis://localhost:6379/0 demo
redis-checkpoint --url redis://... list [--json]
redis-checkpoint --url redis://... show TRACE_ID [--json]
redis-checkpoint --url redis://... flush --durable postgresql://... [--events] [--drain]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from signal import SIGINT, SIGTERM
from typing import NoReturn
from urllib.parse import unquote, urlsplit

from . import (
    CompletionState,
    PersistedTrace,
    PersistenceEnvelope,
    PostgresPersistenceStore,
    RedisPersistenceStore,
    SqlitePersistenceStore,
    TieredPersistenceStore,
    TraceSummary,
)
from .connection import redact as redact_urls
from .errors import PersistenceError
from .events.errors import StoreError
from .tiering import Tiered

FALLBACK_URL = "fakeredis://"  # when REDIS_CHECKPOINT_URL is unset (read at parse time)
try:
    VERSION = version("redis-checkpoint")
except PackageNotFoundError:  # a source tree that is not installed
    VERSION = "unknown"
STEPS = ["validate order", "reserve stock", "charge payment", "ship parcel", "send receipt"]


class Crash(Exception):
    """The demo's stand-in for a worker dying mid-pipeline."""


def redact(text: str, url: str = "") -> str:
    """`text` with the password of every URL in it, and of `url` wherever it appears, as ***."""
    try:
        password = urlsplit(url).password or ""
    except ValueError:
        password = ""
    for secret in {password, unquote(password)} - {""}:
        text = text.replace(secret, "***")
    return redact_urls(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def render(trace: PersistedTrace) -> str:
    head = (
        f"trace {trace.trace_id}  circuit {trace.circuit} v{trace.schematic_version}  "
        f"completion {trace.completion.value if trace.completion else 'open'}  "
        f"resumed_from_step {trace.resumed_from_step}"
    )
    rows = [(e.step, e.outcome_kind, e.node_id or "", json.dumps(e.payload)) for e in trace.events]
    return head + "\n" + table(["step", "outcome", "node", "payload"], rows)


def envelope(trace_id: str, step: int, kind: str, payload: object = None) -> PersistenceEnvelope:
    return PersistenceEnvelope(
        trace_id=trace_id,
        circuit="OrderPipeline",
        schematic_version="1.0",
        step=step,
        node_id="ingress" if kind == "Enter" else STEPS[step - 1],
        outcome_kind=kind,
        timestamp_ms=int(datetime.now(UTC).timestamp() * 1000),
        payload=payload,  # type: ignore[arg-type]
    )


async def run_pipeline(
    store: RedisPersistenceStore, trace_id: str, start: int, crash_at: int
) -> None:
    """Steps `start`..5, one checkpoint each; raises Crash on reaching `crash_at`."""
    await store.append(envelope(trace_id, 0 if start == 1 else start, "Enter"))
    for step in range(start, len(STEPS) + 1):
        if step == crash_at:
            raise Crash(f"worker died while running step {step} ({STEPS[step - 1]})")
        await store.append(envelope(trace_id, step, "Next", {"Next": {"done": STEPS[step - 1]}}))
        print(f"  step {step}: {STEPS[step - 1]} ... checkpointed")
    await store.complete(trace_id, CompletionState.SUCCESS)


async def demo(store: RedisPersistenceStore) -> None:
    trace_id = f"order-{os.urandom(3).hex()}"
    print(f"Run 1: pipeline {trace_id}, five steps, the worker crashes at step 3")
    try:
        await run_pipeline(store, trace_id, start=1, crash_at=3)
    except Crash as crash:
        print(f"  CRASH: {crash}\n")
    trace = await store.load(trace_id)
    assert trace is not None
    print("What the store kept:\n" + render(trace) + "\n")
    last_good = max(e.step for e in trace.events if e.outcome_kind == "Next")
    cursor = await store.resume(trace_id, last_good)
    print(f"Run 2: resume({trace_id!r}, {last_good}) -> next_step {cursor.next_step}")
    await run_pipeline(store, trace_id, start=cursor.next_step, crash_at=-1)
    final = await store.load(trace_id)
    assert final is not None
    print("\nFinal trace:\n" + render(final))
    if store.redis.__class__.__module__.startswith("fakeredis"):
        print("\n(fakeredis:// keeps data in this process; use --url redis://... to keep it)")


async def show(store: RedisPersistenceStore, trace_id: str, as_json: bool) -> int:
    trace = await store.load(trace_id)
    if trace is None:
        print(f"redis-checkpoint: trace {trace_id} not found", file=sys.stderr)
        return 1
    print(trace.model_dump_json() if as_json else render(trace))
    return 0


async def list_traces(store: RedisPersistenceStore, limit: int, as_json: bool) -> int:
    rows: list[TraceSummary] = []
    async for summary in store.iter_traces():
        if len(rows) == limit:
            break
        rows.append(summary)
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in rows]))
        return 0
    headers = ["trace", "circuit", "events", "completion", "resumed", "updated"]
    cells = [
        (
            s.trace_id,
            s.circuit,
            s.events,
            s.completion.value if s.completion else "open",
            "" if s.resumed_from_step is None else s.resumed_from_step,
            datetime.fromtimestamp(s.updated_ms / 1000, UTC).isoformat(timespec="seconds"),
        )
        for s in rows
    ]
    print(table(headers, cells) if rows else "(no traces)")
    return 0


def tiered(args: argparse.Namespace) -> Tiered:
    """The tiered store whose outboxes `flush` applies (its own flusher off: this is it)."""
    options = {"prefix": args.prefix, "shards": args.shards}
    postgres = not args.durable.startswith("sqlite:")
    if args.events:
        from .events import PostgresEventStore, RedisEventStore, SqliteEventStore, TieredEventStore

        cache = RedisEventStore.from_url(args.url, **options)
        kind = PostgresEventStore if postgres else SqliteEventStore
        return TieredEventStore(cache, kind.from_url(args.durable), flusher=False, batch=args.batch)
    traces = RedisPersistenceStore.from_url(args.url, **options)
    store = PostgresPersistenceStore if postgres else SqlitePersistenceStore
    return TieredPersistenceStore(
        traces, store.from_url(args.durable), flusher=False, batch=args.batch
    )


async def flush(store: Tiered, every: float, drain: bool) -> int:
    """Apply the outboxes to the durable store until interrupted (or, with `drain`, until
    they are empty), printing progress every `every` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal in (SIGINT, SIGTERM):
        loop.add_signal_handler(signal, stop.set)
    work = asyncio.create_task(store.flusher.run(stop))
    started, before = loop.time(), 0
    while not work.done():
        await asyncio.wait([work], timeout=every)
        backlog = await store.flusher.backlog()
        applied = store.flusher.applied
        lag = "-" if backlog.lag is None else f"{backlog.lag:.1f}s"
        rate = (applied - before) / every
        print(f"applied {applied} ({rate:.0f}/s)  backlog {backlog.changes}  lag {lag}", flush=True)
        before = applied
        if drain and backlog.changes == 0:
            stop.set()
    await work
    print(f"flushed {store.flusher.applied} changes in {loop.time() - started:.1f}s")
    return 0


async def main_async(args: argparse.Namespace) -> int:
    if args.command == "flush":
        async with tiered(args) as store:
            return await flush(store, args.every, args.drain)
    async with RedisPersistenceStore.from_url(args.url, prefix=args.prefix) as store:
        if args.command == "demo":
            await demo(store)
            return 0
        if args.command == "show":
            return await show(store, args.trace_id, args.json)
        return await list_traces(store, args.limit, args.json)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return int(text)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        super().error(redact(message))  # a mistyped argument may hold a URL with a password


def parser() -> Parser:
    url = os.environ.get("REDIS_CHECKPOINT_URL", FALLBACK_URL)
    shown = redact(url).replace("%", "%%")  # argparse %-formats help strings
    parser = Parser(prog="redis-checkpoint", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    parser.add_argument("--url", default=url, help=f"store URL (default {shown})")
    parser.add_argument("--prefix", default="rc", help="key prefix (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="crash a five-step pipeline at step 3, then resume it")
    show = commands.add_parser("show", help="print one trace")
    show.add_argument("trace_id")
    show.add_argument("--json", action="store_true", help="Ranvier's JSON wire form")
    listing = commands.add_parser("list", help="traces, most recently updated first")
    listing.add_argument("--limit", type=positive, default=50, help="at most this many")
    listing.add_argument("--json", action="store_true")
    flusher = commands.add_parser(
        "flush", help="apply a write-behind cache's outboxes to the durable store"
    )
    flusher.add_argument("--durable", required=True, help="postgresql://... or sqlite:///...")
    flusher.add_argument("--events", action="store_true", help="event histories, not traces")
    flusher.add_argument("--shards", type=positive, default=64, help="(default %(default)s)")
    flusher.add_argument("--batch", type=positive, default=1000, help="changes per transaction")
    flusher.add_argument("--every", type=float, default=1.0, help="seconds between reports")
    flusher.add_argument("--drain", action="store_true", help="exit once the backlog is empty")
    return parser


def fail(message: str, url: str, status: int) -> int:
    print(f"redis-checkpoint: {redact(' '.join(message.split()), url)}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status = asyncio.run(main_async(args))
        sys.stdout.flush()  # a closed pipe (`| head`) fails here, not at interpreter exit
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # drop buffered output
        return 141  # 128 + SIGPIPE, as a shell reports `yes | head`
    except KeyboardInterrupt:
        return 130
    except (PersistenceError, StoreError) as exc:  # a trace not there (LookupError): status 1
        return fail(str(exc), args.url, 1 if isinstance(exc, LookupError) else 2)
    except Exception as exc:  # anything else still gets one line, never a traceback
        name = type(exc).__name__
        return fail(f"{name}: {exc}" if str(exc) else name, args.url, 2)

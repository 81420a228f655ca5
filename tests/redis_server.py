"""Real Redis servers for the tests: each on free loopback ports in a temp dir, stopped after.

``redis_server`` is one plain redis-server. ``redis_servers`` starts more, with
any arguments (an ACL user, ``--replicaof``, a Sentinel, TLS), and
``redis_cluster`` makes a three-node Redis Cluster with ``redis-cli --cluster
create``. Persistence is off. Without a binary (redis-server, redis-cli,
openssl for TLS) the tests that need it are skipped with how to install it,
except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

INSTALL = "install it: apt-get install redis-server (Debian/Ubuntu) or brew install redis"


def _free_port(*, bus: bool = False) -> int:
    """A free loopback port (with ``bus``, one whose cluster bus port, +10000, is free too)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if not bus:
            return port
        if port + 10000 <= 65535:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def need(binary: str) -> str:
    """The path of ``binary``; skip without it, or fail in CI."""
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{binary} is not installed, and CI needs the Redis tests: {INSTALL}")
        pytest.skip(f"{binary} is not installed; {INSTALL}")
    return path


class RedisServer:
    """One redis-server process; ``stop()`` and ``start()`` again on the same port."""

    def __init__(
        self, binary: str, directory: Path, *args: str, tls: bool = False, bus: bool = False
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port(bus=bus)
        self.args = args
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("this redis-server is running already")
        port = (
            ["--port", "0", "--tls-port", str(self.port)]
            if self.tls
            else ["--port", str(self.port)]
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                *self.args,  # a config file (a Sentinel's) comes first
                *port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    if self.tls:  # listening is enough: a TLS handshake is the test's
                        return
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith((b"+PONG", b"-NOAUTH")):  # up, with a password
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None

    def kill(self) -> None:
        """Kill it at once (SIGKILL), as a crashed host: no shutdown, no goodbye to replicas."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None

    def cli(self, *args: str) -> str:
        """``redis-cli`` against this server (plain text answers)."""
        command = [need("redis-cli"), "-p", str(self.port), *args]
        return subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=10
        ).stdout


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    binary = need("redis-server")
    with tempfile.TemporaryDirectory(prefix="capillary-redis-") as directory:
        server = RedisServer(binary, Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


StartRedis = Callable[..., RedisServer]


@pytest.fixture
def redis_servers() -> Iterator[StartRedis]:
    """Start redis-servers with extra arguments: ``start(*args, tls=False)``; all stopped after."""
    binary = need("redis-server")
    started: list[RedisServer] = []
    with tempfile.TemporaryDirectory(prefix="capillary-redis-") as directory:

        def start(*args: str, tls: bool = False, bus: bool = False) -> RedisServer:
            server = RedisServer(
                binary, Path(directory) / str(len(started)), *args, tls=tls, bus=bus
            )
            started.append(server)
            server.start()
            return server

        try:
            yield start
        finally:
            for server in started:
                server.stop()


@pytest.fixture
def redis_cluster(redis_servers: StartRedis) -> list[RedisServer]:
    """Three master nodes of one Redis Cluster on loopback, every slot covered."""
    return make_cluster(redis_servers, 3)


def make_cluster(start: StartRedis, nodes: int, *args: str, replicas: int = 0) -> list[RedisServer]:
    """A Redis Cluster of ``nodes`` on loopback (``args``: more for each), every slot covered.

    With ``replicas=1``, half the nodes are masters and half their replicas.
    A node that stops is seen as failed after a second (``cluster-node-timeout``).
    """
    need("redis-cli")
    # A replica syncs at once, and may take over however long its master was gone.
    options = (
        "--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
        "--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0",
    )  # fmt: skip
    servers = [start(*options, *args, bus=True) for _ in range(nodes)]
    addresses = [f"127.0.0.1:{node.port}" for node in servers]
    servers[0].cli(
        "--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"
    )
    deadline = time.monotonic() + 20
    while not all(_cluster_ready(node, nodes) for node in servers):
        if time.monotonic() > deadline:
            raise RuntimeError("the Redis Cluster did not come up")
        time.sleep(0.05)
    return servers


def _cluster_ready(node: RedisServer, nodes: int) -> bool:
    info = node.cli("cluster", "info")
    if not ("cluster_state:ok" in info and f"cluster_known_nodes:{nodes}" in info):
        return False
    replication = node.cli("info", "replication")
    return "role:master" in replication or "master_link_status:up" in replication


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for ``localhost`` (openssl), trusted by nobody."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [need("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost"],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    return cert, key


#: What Python 3.13's strict X.509 checks (ssl.VERIFY_X509_STRICT, on by default) ask
#: of a CA and of what it signs: a CA's key usage, a leaf's authority key identifier.
CA_EXTENSIONS = (
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    "-addext", "subjectKeyIdentifier=hash",
)  # fmt: skip
LEAF_EXTENSIONS = (
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
)


class PrivateCA:
    """A throwaway CA (openssl) and what it signed: a server and a client certificate."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca, ca_key = directory / "ca.pem", directory / "ca-key.pem"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(ca_key), "-out", str(self.ca), "-days", "1",
            "-subj", "/CN=capillary test CA", *CA_EXTENSIONS,
        )  # fmt: skip
        self.server_cert, self.server_key = self._sign("server", ca_key, server=True)
        self.client_cert, self.client_key = self._sign("client", ca_key, server=False)

    def _sign(self, name: str, ca_key: Path, *, server: bool) -> tuple[Path, Path]:
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        request = self.directory / f"{name}.csr"
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            LEAF_EXTENSIONS
            + (
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                if server
                else "extendedKeyUsage=clientAuth\n"
            )
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(extensions),
        )  # fmt: skip
        return cert, key

    def server_args(self, *, auth_clients: bool = True) -> tuple[str, ...]:
        """redis-server's TLS arguments: this CA's server certificate, clients' checked."""
        return (
            "--tls-cert-file", str(self.server_cert), "--tls-key-file", str(self.server_key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "yes" if auth_clients else "no",
        )  # fmt: skip


def _openssl(*args: str) -> None:
    subprocess.run([need("openssl"), *args], capture_output=True, check=True, timeout=30)


def make_sentinels(
    start: StartRedis, directory: Path, service: str, *, password: str | None = None
) -> tuple[RedisServer, RedisServer, list[RedisServer]]:
    """A master, its replica and three Sentinels (quorum 2) watching it, all on loopback.

    With ``password``, the master and the replica require it (the Sentinels
    know it). The master is taken for down after half a second; a failover
    then takes one to two seconds.
    """
    need("redis-cli")
    auth = ("--requirepass", password, "--masterauth", password) if password else ()
    master = start("--repl-diskless-sync-delay", "0", *auth)
    replica = start(
        "--repl-diskless-sync-delay", "0", "--replicaof", "127.0.0.1", str(master.port), *auth
    )
    sentinels = []
    for n in range(3):
        conf = directory / f"sentinel-{n}.conf"  # a Sentinel rewrites its own file
        conf.write_text(
            f"sentinel monitor {service} 127.0.0.1 {master.port} 2\n"
            f"sentinel down-after-milliseconds {service} 500\n"
            f"sentinel failover-timeout {service} 2000\n"
            + (f"sentinel auth-pass {service} {password}\n" if password else "")
        )
        sentinels.append(start(str(conf), "--sentinel"))
    login = ("-a", password, "--no-auth-warning") if password else ()
    deadline = time.monotonic() + 20
    while True:
        states = [_fields(s.cli("sentinel", "master", service)) for s in sentinels]
        found = all(
            s.get("num-other-sentinels") == "2" and s.get("num-slaves") == "1" for s in states
        )
        if found and "master_link_status:up" in replica.cli(*login, "info", "replication"):
            return master, replica, sentinels
        if time.monotonic() > deadline:
            raise RuntimeError("the Sentinels did not find each other and the replica")
        time.sleep(0.1)


def _fields(reply: str) -> dict[str, str]:
    lines = reply.splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=False))

"""A Redis that can lose its primary, on loopback: a primary, replicas and sentinels as real processes.

Each part is a redis-server on a free port of 127.0.0.1 (sentinels run `redis-server
FILE --sentinel`, which is what Debian's redis-sentinel does), with its own directory,
config file and log. The tests of taskkit's failover and bench/ use it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

MASTER_NAME = "taskkit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisFleet:
    """A primary, `replicas` replicas and `sentinels` sentinels (quorum 2) that fail over after `down_after` ms.

    password: Redis's (requirepass/masterauth); sentinel_password: the sentinels' requirepass.
    tls: {"ca", "cert", "key"} file paths: every part speaks only TLS (port 0, tls-replication).
    """

    def __init__(
        self,
        directory: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        password: str = "",
        sentinel_password: str = "",
        down_after: int = 1000,
        tls: dict[str, str] | None = None,
    ) -> None:
        self.dir, self.password, self.sentinel_password, self.down_after, self.tls = directory, password, sentinel_password, down_after, tls
        self.server = shutil.which("redis-server")
        assert self.server, "redis-server is needed: apt-get install redis-server"
        self.redis_ports = [free_port() for _ in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.procs: dict[int, subprocess.Popen] = {}

    # ------------------------------------------------------------ lifecycle

    def start(self) -> RedisFleet:
        primary, *replicas = self.redis_ports
        self._start_redis(primary)
        for port in replicas:
            self._start_redis(port, replica_of=primary)
        for port in replicas:
            self.wait(lambda p=port: self.role(p).get("master_link_status") == "up", 20, "the replicas to sync")
        for port in self.sentinel_ports:
            self._start_sentinel(port, primary)
        self.wait(lambda: all(self._sentinel_sees_all(p) for p in self.sentinel_ports), 30, "the sentinels to find each other")
        return self

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> RedisFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ what the tests use

    @property
    def url(self) -> str:
        """taskkit's broker.url for this fleet (with broker.master_name = MASTER_NAME)."""
        return ";".join(f"sentinel://127.0.0.1:{p}/0" for p in self.sentinel_ports)

    def primary(self) -> int:
        """The port the sentinels name as primary now (the first that answers)."""
        for port in self.sentinel_ports:
            try:
                return int(self.sentinel(port).sentinel_get_master_addr_by_name(MASTER_NAME)[1])
            except (redis.RedisError, OSError, TypeError):
                continue
        raise AssertionError("no sentinel answered")

    def kill(self, port: int) -> None:
        """SIGKILL one part (no shutdown, no last writes), as a host that loses power."""
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait()

    def cut_replication(self, replica: int) -> None:
        """The replica loses its link and cannot get it back (a wrong masterauth): the primary takes writes alone."""
        self.client(replica).config_set("masterauth", "not-the-password")
        self.client(self.primary()).client_kill_filter(_type="replica")
        self.wait(lambda: self.role(replica)["master_link_status"] == "down", 10, "the replication link to drop")

    def settled(self) -> bool:
        """Every sentinel names the same primary, and none sees it down (clients can find it)."""
        states = [self.sentinel(p).sentinel_master(MASTER_NAME) for p in self.sentinel_ports]
        return len({s["port"] for s in states}) == 1 and all(s["flags"] == "master" for s in states)

    def restart_as_replica(self, port: int) -> None:
        """Bring a killed part back as a replica of the current primary (as a rebooted host rejoins), once it has synced.

        Until its first sync ends it holds nothing, and Sentinel would still promote it.
        """
        self._start_redis(port, replica_of=self.primary())
        self.wait(lambda: self.role(port).get("master_link_status") == "up", 30, f"the replica on {port} to sync")

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password or None, **self._client_tls())

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.sentinel_password or None, socket_timeout=2, **self._client_tls())

    def role(self, port: int) -> dict[str, Any]:
        return self.client(port).info("replication")

    def settings_env(self) -> dict[str, str]:
        """The TASKKIT_* environment that points taskkit at this fleet."""
        env = {"TASKKIT_BROKER_URL": self.url, "TASKKIT_BROKER_MASTER_NAME": MASTER_NAME}
        if self.password:
            env["TASKKIT_BROKER_PASSWORD"] = self.password
        if self.sentinel_password:
            env["TASKKIT_SENTINEL_PASSWORD"] = self.sentinel_password
        if self.tls:
            env.update(TASKKIT_BROKER_TLS="true", TASKKIT_BROKER_TLS_CA_FILE=self.tls["ca"])
            env.update(TASKKIT_BROKER_TLS_CERT_FILE=self.tls["cert"], TASKKIT_BROKER_TLS_KEY_FILE=self.tls["key"])
        return env

    @staticmethod
    def wait(probe: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if value := probe():
                    return value
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    # ------------------------------------------------------------ parts

    def _client_tls(self) -> dict[str, Any]:
        if not self.tls:
            return {}
        return {"ssl": True, "ssl_ca_certs": self.tls["ca"], "ssl_certfile": self.tls["cert"], "ssl_keyfile": self.tls["key"]}

    def _listen(self, port: int) -> list[str]:
        lines = ["bind 127.0.0.1"]
        if self.tls:
            lines += ["port 0", f"tls-port {port}", "tls-replication yes", "tls-auth-clients yes"]
            lines += [f"tls-cert-file {self.tls['cert']}", f"tls-key-file {self.tls['key']}", f"tls-ca-cert-file {self.tls['ca']}"]
        else:
            lines.append(f"port {port}")
        return lines

    def _start_redis(self, port: int, replica_of: int | None = None) -> None:
        d = self.dir / f"redis-{port}"
        d.mkdir(parents=True, exist_ok=True)
        lines = [*self._listen(port), f"dir {d}", 'save ""', "appendonly no", f"logfile {d / 'redis.log'}"]
        lines.append("repl-diskless-sync-delay 0")  # a replica syncs at once, not after 5 s of waiting for others
        if self.password:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        if replica_of:
            lines.append(f"replicaof 127.0.0.1 {replica_of}")
        self._spawn(port, d, lines)
        self.wait(lambda: self.client(port).ping(), 10, f"redis-server on {port}")

    def _start_sentinel(self, port: int, primary: int) -> None:
        d = self.dir / f"sentinel-{port}"
        d.mkdir(parents=True, exist_ok=True)
        lines = [*self._listen(port), f"dir {d}", f"logfile {d / 'sentinel.log'}"]
        lines += [
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after}",
            f"sentinel failover-timeout {MASTER_NAME} {max(3 * self.down_after, 3000)}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {MASTER_NAME} {self.password}")
        if self.sentinel_password:
            lines.append(f"requirepass {self.sentinel_password}")
        self._spawn(port, d, lines, sentinel=True)
        self.wait(lambda: self.sentinel(port).ping(), 10, f"sentinel on {port}")

    def _spawn(self, port: int, d: Path, lines: list[str], *, sentinel: bool = False) -> None:
        conf = d / ("sentinel.conf" if sentinel else "redis.conf")
        conf.write_text("\n".join(lines) + "\n")  # sentinels rewrite theirs: it must be writable
        os.chmod(conf, 0o600)  # passwords
        argv = [self.server, str(conf), *(["--sentinel"] if sentinel else [])]
        self.procs[port] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def _sentinel_sees_all(self, port: int) -> bool:
        master = self.sentinel(port).sentinel_master(MASTER_NAME)
        return master["num-other-sentinels"] == len(self.sentinel_ports) - 1 and master["num-slaves"] == len(self.redis_ports) - 1


def make_tls(directory: Path) -> dict[str, str]:
    """A CA and one certificate it signed for 127.0.0.1 (server and client use), made with openssl: {"ca", "cert", "key"}."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key, csr = (directory / n for n in ("ca.crt", "ca.key", "redis.crt", "redis.key", "redis.csr"))
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")

    def openssl(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=taskkit test CA",
            "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    return {"ca": str(ca), "cert": str(cert), "key": str(key)}


def tls_redis(directory: Path, tls: dict[str, str], *, auth_clients: bool = True) -> tuple[int, subprocess.Popen]:
    """One redis-server that speaks only TLS (port 0) on a free port; (port, process)."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    argv = [shutil.which("redis-server") or "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    argv += ["--tls-cert-file", tls["cert"], "--tls-key-file", tls["key"], "--tls-ca-cert-file", tls["ca"]]
    argv += ["--tls-auth-clients", "yes" if auth_clients else "no", "--save", "", "--appendonly", "no", "--dir", str(directory)]
    argv += ["--databases", "256"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, ssl=True, ssl_ca_certs=tls["ca"], ssl_certfile=tls["cert"], ssl_keyfile=tls["key"])
    RedisFleet.wait(client.ping, 10, "the TLS redis-server")
    return port, proc

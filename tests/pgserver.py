"""A private PostgreSQL server for tests that stop and start it.

``private_postgres(directory)`` runs ``initdb`` and ``pg_ctl start`` on a free
port with its socket in the data directory, yields a ``PrivateServer`` (its
URL, ``stop()``, ``start()``), and stops it afterwards. It never touches the
shared server. The binaries come from ``$PATH`` or ``/usr/lib/postgresql/*/bin``;
as root they run as the ``postgres`` user (PostgreSQL refuses to run as root).
Without the binaries, or without a way to run them, the test skips loudly
through ``need_service`` (fails under ``RUNFOX_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import need_service


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateServer:
    """A running private server: ``url`` (database ``postgres``), ``stop``, ``start``."""

    bin_dir: Path
    data: Path
    port: int
    prefix: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self.prefix, str(self.bin_dir / "pg_ctl"), "-D",
                               str(self.data), *args], capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", options, "-l", str(self.data / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")


@contextlib.contextmanager
def private_postgres(directory: Path | None = None) -> Iterator[PrivateServer]:
    """A fresh private PostgreSQL server on a free port; stopped when the block ends."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        need_service("private postgresql", "no initdb/pg_ctl on PATH or under "
                                           "/usr/lib/postgresql/*/bin")
        raise AssertionError("unreachable")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        with contextlib.suppress(KeyError):
            owner = pwd.getpwnam("postgres")
        if runuser is None or owner is None:
            need_service("private postgresql", "running as root without runuser or a "
                                               "'postgres' user to run the server as")
        assert runuser is not None and owner is not None
        prefix = [runuser, "-u", "postgres", "--"]
    # Not under pytest's tmp_path: its parents are private to root.
    root = Path(tempfile.mkdtemp(prefix="runfox-pg-", dir=directory))
    data = root / "data"
    if owner is not None:
        os.chmod(root, 0o755)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PrivateServer(bin_dir, data, free_port(), prefix)
    try:
        done = subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U",
                               "postgres", "-A", "trust", "--no-sync"],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            need_service("private postgresql", f"initdb failed: {done.stderr.strip()}")
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)

"""A throwaway PostgreSQL server of its own, for the tests and `digest bench --postgres`.

It uses the server binaries of the machine (Debian's `postgresql` package puts them in
`/usr/lib/postgresql/<version>/bin`; `PG_BIN` names another folder) and makes a new cluster in
a temporary folder, listening on 127.0.0.1 on a free port, trusted, with its socket in its own
folder: nothing of the machine's own PostgreSQL (if it runs one) is used or touched.

PostgreSQL refuses to run as root: as root the cluster is made and run as the `postgres` user
(which the Debian package creates), with `runuser`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path


class Unavailable(Exception):
    """No PostgreSQL server can be started here (the message says why)."""


def binaries() -> Path:
    """The folder of `initdb`, `pg_ctl` and `postgres`: `PG_BIN`, else the newest Debian one, else PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise Unavailable("no PostgreSQL server binaries (install Debian's `postgresql`, or set PG_BIN)")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (for a server of our own: this one, the
    benchmark's SMTP sink, the tests' servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TempPostgres:
    """A PostgreSQL cluster in a temporary folder: `start()`, `url(name)`, `create_database()`, `stop()`.

    `durable=False` (the tests) turns fsync and synchronous commits off: faster, and a crash of
    the machine is no concern for a throwaway cluster. The benchmark keeps the defaults."""

    durable: bool = True
    port: int = field(default_factory=free_port)
    folder: Path | None = None
    _as: list[str] = field(default_factory=list)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if result.returncode != 0:
            raise Unavailable(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-500:]}")
        return result

    def start(self) -> TempPostgres:
        bin_dir = binaries()
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise Unavailable("running as root and `runuser` is missing (PostgreSQL will not run as root)")
            try:
                import pwd

                user = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no `postgres` user to run the server as") from None
            self._as = ["runuser", "-u", "postgres", "--"]
        # Not under pytest's own temporary folder: that one is private to root.
        self.folder = Path(tempfile.mkdtemp(prefix="digest-pg-"))
        if self._as:
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        data = self.folder / "data"
        self._run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.folder}", "-c max_connections=200"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", " ".join(options), "-l", str(self.folder / "server.log"), "-w", "-t", "60", "start")
        self._bin = bin_dir
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new database, empty or a copy of the database `template` (a file-level copy, fast): its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def stop(self) -> None:
        if self.folder is None:
            return
        try:
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        except Unavailable:
            pass
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

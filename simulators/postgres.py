"""A throwaway PostgreSQL cluster on a free loopback port, for tests, benchmarks and demos.

Debian's server binaries (package `postgresql`, /usr/lib/postgresql/<major>/bin) are run
directly: `initdb` into a fresh folder, then `postgres` listening on 127.0.0.1 only, with
no Unix socket. PostgreSQL refuses to run as root, so under root the cluster belongs to
the `postgres` account the package creates. `stop()`/`start()` keep the port and the data,
so a test can restart the server under a running gateway; `kill()` is a crash.

`initdb` and `createdb` take about two seconds, and the suite starts dozens of clusters: the
first cluster of a process is made that way and kept, stopped, as a template; each later one
is a copy of its folder (`cp -a`, as the server's account), started on a port of its own.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from simulators.broker import free_port, wait_for_port
from warden.process import terminate

#: Overrides where the server binaries are looked for (a folder holding initdb and postgres).
BIN_ENV = "WARDEN_POSTGRES_BIN"


def find_postgres_bin() -> Path | None:
    """$WARDEN_POSTGRES_BIN, else the newest /usr/lib/postgresql/<major>/bin, else initdb on PATH."""
    if os.environ.get(BIN_ENV):
        return Path(os.environ[BIN_ENV])
    majors = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name), reverse=True)
    if majors:
        return majors[0].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresServer:
    """One `postgres` process owning a cluster of its own; user `warden`, database `warden`."""

    user = "warden"
    database = "warden"

    def __init__(self, bin_dir: Path | None = None, port: int | None = None, *, from_template: bool = True) -> None:
        """`from_template`: a copy of this process's template cluster; False: initdb and createdb."""
        found = bin_dir or find_postgres_bin()
        if found is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql, or set WARDEN_POSTGRES_BIN)")
        self.bin_dir = found
        self.port = port or free_port()
        # Not under pytest's tmp_path: that folder is root's own (mode 700) and the server may run as `postgres`.
        self.workdir = Path(tempfile.mkdtemp(prefix="warden-pg-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self._account = _server_account()
        if self._account is not None:
            os.chown(self.workdir, self._account.pw_uid, self._account.pw_gid)
        self._process: subprocess.Popen[bytes] | None = None
        if from_template:
            self._run(["cp", "-a", str(_template(self.bin_dir)), str(self.data_dir)])
            self.start()
        else:
            self._run([str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
                       "--encoding=UTF8", "--locale=C", "--no-sync"])
            self.start()
            self._run([str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database])

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self, timeout: float = 30.0) -> None:
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                   "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                   "-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(self._as_server(command), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
            self._wait_ready(timeout)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- {self.log_path} ---\n{self._log_tail()}") from None

    def stop(self, timeout: float = 30.0) -> None:
        """A fast shutdown (SIGINT): sessions are ended, as in a restart by the operator."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        terminate(self._process, timeout)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _wait_ready(self, timeout: float) -> None:
        """Accepting TCP is not ready: during recovery the server refuses sessions."""
        deadline = time.monotonic() + timeout
        ready = [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-q"]
        pause = 0.005
        while subprocess.run(ready, check=False).returncode != 0:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"postgres exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres on port {self.port} not ready within {timeout}s")
            time.sleep(pause)  # pg_isready polls; the server offers no event to wait on
            pause = min(2 * pause, 0.05)

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(self._as_server(command), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def _as_server(self, command: list[str]) -> list[str]:
        if self._account is None:
            return command
        return ["setpriv", f"--reuid={self._account.pw_uid}", f"--regid={self._account.pw_gid}", "--clear-groups", *command]

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


_templates: dict[Path, Path] = {}  # server binaries -> the stopped template cluster's data folder
_templates_lock = threading.Lock()


def _template(bin_dir: Path) -> Path:
    """This process's template cluster for these binaries, made on first use, removed at exit."""
    with _templates_lock:
        if bin_dir not in _templates:
            template = PostgresServer(bin_dir, from_template=False)
            template.stop()
            atexit.register(template.close)
            _templates[bin_dir] = template.data_dir
        return _templates[bin_dir]


def _server_account() -> pwd.struct_passwd | None:
    """Who runs the server: this user, unless root (refused by PostgreSQL): then `postgres`."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and no 'postgres' account: PostgreSQL refuses root (apt-get install postgresql)") from None

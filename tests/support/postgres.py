"""A PostgreSQL server for the tests, and a fresh database on it for each test.

`find_server()` takes the first of:

1. ``CORTEXD_TEST_POSTGRES_URL``: a libpq URI to a server where its user may CREATE DATABASE. Once
   set, it is the only one tried: a misconfigured URL is reported, never silently replaced;
2. the local server at 127.0.0.1:5432, as ``postgres`` without a password (a trust login);
3. a private throwaway cluster from the server binaries (Debian's
   ``/usr/lib/postgresql/<version>/bin``, newest first, else ``initdb`` on PATH): a temporary
   directory, a free loopback port, trust auth, no fsync (throwaway data: only an OS crash loses
   it, and then nothing is lost that a test needs). initdb and the server refuse to run as root,
   so under root they run as ``nobody``. `Server.close()` or, failing that, exit stops and
   removes it; one left by a killed session is removed when the next one starts.

``CORTEXD_TEST_POSTGRES_PRIVATE=1`` skips the first two. A database is named
``cortexd_test_<pid>_<hex>`` and dropped ``WITH (FORCE)`` (PostgreSQL 13+): a connection a test
left open does not keep it.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tests.support.process import free_port

URL_ENV = "CORTEXD_TEST_POSTGRES_URL"
PRIVATE_ENV = "CORTEXD_TEST_POSTGRES_PRIVATE"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BIN_GLOB = "/usr/lib/postgresql/*/bin"
UNPRIVILEGED_USER = "nobody"
ROOT_PREFIX = "cortexd-pg-"  # a private cluster's directory, in the temporary directory
SESSION_FILE = "session.pid"  # in it: the pid of the process it belongs to
DATABASE_PREFIX = "cortexd_test_"
NONE_FOUND = (
    "no PostgreSQL: set CORTEXD_TEST_POSTGRES_URL, run one on 127.0.0.1:5432, "
    "or install the postgresql package"
)
MIN_SERVER_VERSION = 130000  # DROP DATABASE ... WITH (FORCE)
LOCAL_CONNECT_TIMEOUT_S = 2
CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_MS = 60_000
INITDB_TIMEOUT_S = 120.0
PG_CTL_WAIT_S = 60
PG_CTL_TIMEOUT_S = PG_CTL_WAIT_S + 30.0
KILL_WAIT_S = 10.0
# A free port can be taken by someone else between choosing it and the server binding it.
START_ATTEMPTS = 3


class ClusterError(Exception):
    """A private cluster could not be made or started; the message says why."""


class Server:
    """A PostgreSQL server on which the tests create their databases."""

    def __init__(self, url: str, source: str, cluster: PrivateCluster | None = None) -> None:
        self.url = url  # the admin URL: a user that may CREATE DATABASE
        self.source = source
        self.cluster = cluster

    def create_database(self) -> str:
        """Create an empty database of a name no other test has; return its URL."""
        name = f"{DATABASE_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return with_database(self.url, name)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url` (one `create_database` made), closing its connections."""
        name = database_of(url)
        if not name.startswith(DATABASE_PREFIX):
            raise ValueError(f"not a test database: {name!r}")
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        self._admin(drop.format(sql.Identifier(name)))

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database's URL, dropped on leaving."""
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url)

    def close(self) -> None:
        """Stop and remove the server if it is a private cluster; others are left running."""
        if self.cluster is not None:
            self.cluster.stop()

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute(sql.SQL("SET statement_timeout = {}").format(STATEMENT_TIMEOUT_MS))
            conn.execute(statement)


def find_server(*, private_only: bool = False) -> tuple[Server | None, str]:
    """The server the tests use and where it is from; or None and why there is none.

    :param private_only: skip the URL and the local server, and start a private cluster (also
        what ``CORTEXD_TEST_POSTGRES_PRIVATE=1`` does).
    """
    tried: list[str] = []
    if not (private_only or os.environ.get(PRIVATE_ENV) == "1"):
        url = os.environ.get(URL_ENV)
        if url:
            why = unusable(url, CONNECT_TIMEOUT_S)
            if why is not None:
                return None, f"{URL_ENV} is set but unusable: {why}"
            return Server(url, URL_ENV), f"the server of {URL_ENV}"
        why = unusable(LOCAL_URL, LOCAL_CONNECT_TIMEOUT_S)
        if why is None:
            return Server(LOCAL_URL, "127.0.0.1:5432"), "the local server at 127.0.0.1:5432"
        tried.append(f"127.0.0.1:5432: {why}")
    bindir = server_binaries()
    if bindir is None:
        tried.append(f"no initdb and pg_ctl in {BIN_GLOB} or on PATH")
        return None, f"{NONE_FOUND} ({'; '.join(tried)})"
    try:
        cluster = PrivateCluster.start(bindir)
    except ClusterError as error:
        return None, f"a private cluster from {bindir} did not start: {error}"
    why = unusable(cluster.url, CONNECT_TIMEOUT_S)
    if why is not None:
        cluster.stop()
        return None, f"the private cluster from {bindir} is unusable: {why}"
    return Server(cluster.url, "private", cluster), f"a private cluster from {bindir}"


def unusable(url: str, connect_timeout: int) -> str | None:
    """Why the tests cannot create and force-drop databases through `url`, or None."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout) as conn:
            version = conn.info.server_version
            row = conn.execute(
                "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as error:
        return next(iter(str(error).strip().splitlines()), type(error).__name__)
    if version < MIN_SERVER_VERSION:
        return f"PostgreSQL {version // 10000} is too old: DROP DATABASE ... WITH (FORCE) needs 13"
    if row is None or not row[0]:
        return "its user may not CREATE DATABASE"
    return None


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead of its own."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "dbname"]
    return urlunsplit(parts._replace(path=f"/{name}", query=urlencode(query)))


def database_of(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def server_binaries() -> Path | None:
    """The directory of the newest PostgreSQL server binaries (initdb, pg_ctl), if any."""
    candidates = sorted((Path(found) for found in glob.glob(BIN_GLOB)), key=_version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    tools = ("initdb", "pg_ctl")
    return next(
        (found for found in candidates if all(os.access(found / t, os.X_OK) for t in tools)),
        None,
    )


def _version(bindir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); 9.6 -> (9, 6)
    parts = bindir.parent.name.split(".")
    return tuple(int(part) for part in parts) if all(p.isdigit() for p in parts) else (0,)


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, serving 127.0.0.1 only."""

    def __init__(self, bindir: Path, root: Path, owner: tuple[int, int] | None) -> None:
        self.bindir = bindir
        self.root = root  # data/, server.log, session.pid and the Unix socket
        self.data = root / "data"
        self.log = root / "server.log"
        self.owner = owner  # (uid, gid) to run as, when we are root
        self.port = 0
        self.stopped = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls, bindir: Path) -> PrivateCluster:
        owner = _unprivileged_owner()
        cls.reap_abandoned(bindir, owner)
        cluster = cls(bindir, Path(tempfile.mkdtemp(prefix=ROOT_PREFIX)), owner)
        atexit.register(cluster.stop)
        try:
            (cluster.root / SESSION_FILE).write_text(str(os.getpid()))
            if owner is not None:
                os.chown(cluster.root, *owner)
            cluster._initdb()
            cluster._serve()
        except (OSError, subprocess.TimeoutExpired) as error:
            cluster.stop()
            raise ClusterError(str(error)) from error
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @classmethod
    def reap_abandoned(cls, bindir: Path, owner: tuple[int, int] | None) -> None:
        """Stop and remove the clusters whose session was killed before it could (no atexit)."""
        for root in Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*"):
            try:
                session = int((root / SESSION_FILE).read_text())
            except (OSError, ValueError):
                continue  # not one of ours, or still being made
            if not _alive(session):
                cls(bindir, root, owner).stop()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stop the server (at once: nothing in it is kept) and remove its directory."""
        if self.stopped:
            return
        self.stopped = True
        atexit.unregister(self.stop)
        try:
            pid = self.postmaster_pid()
            if pid is not None and not self._pg_ctl_stop():
                _kill_if_alive(pid)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _pg_ctl_stop(self) -> bool:
        stop = [str(self.bindir / "pg_ctl"), *self._pg_ctl_args(), "-m", "immediate", "stop"]
        try:
            return self._run(stop).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _initdb(self) -> None:
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U"]
        initdb += ["postgres", "-E", "UTF8", "--no-locale", "--no-sync"]
        result = self._run(initdb, INITDB_TIMEOUT_S)
        if result.returncode != 0:
            raise ClusterError(f"initdb exited {result.returncode}: {_tail(result.stdout)}")

    def kill(self) -> None:
        """Stop the server at once, as a crash would (no shutdown checkpoint: the next start
        recovers from the WAL); every client's connection is cut."""
        if not self._pg_ctl_stop():
            raise ClusterError(f"pg_ctl stop failed: {_tail(self._log_since(0))}")

    def serve_again(self) -> None:
        """Start the server again on the port it had: clients' URLs stay valid."""
        result = self._start_on(self.port)
        if result.returncode != 0:
            raise ClusterError(f"pg_ctl start exited {result.returncode}")

    def _start_on(self, port: int) -> subprocess.CompletedProcess[str]:
        options = f"-p {port} -k {shlex.quote(str(self.root))}"
        options += " -c listen_addresses=127.0.0.1 -c fsync=off"
        start = [str(self.bindir / "pg_ctl"), *self._pg_ctl_args(), "-o", options, "start"]
        return self._run(start)

    def _serve(self) -> None:
        log = ""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            logged = self.log.stat().st_size if self.log.exists() else 0
            result = self._start_on(port)
            if result.returncode == 0:
                self.port = port
                return
            log = self._log_since(logged)
            if "could not bind" not in log:
                raise ClusterError(f"pg_ctl start exited {result.returncode}: {_tail(log)}")
        raise ClusterError(f"no free port after {START_ATTEMPTS} tries: {_tail(log)}")

    def _log_since(self, offset: int) -> str:
        try:
            with self.log.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _pg_ctl_args(self) -> list[str]:
        return ["-D", str(self.data), "-l", str(self.log), "-w", "-t", str(PG_CTL_WAIT_S)]

    def _run(
        self, args: list[str], timeout: float = PG_CTL_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        # The server's stdout and stderr go to server.log (pg_ctl -l), so nothing it inherits
        # keeps these pipes open after pg_ctl returns.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        uid, gid = self.owner if self.owner is not None else (None, None)
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=self.root,
            timeout=timeout,
            check=False,
            user=uid,
            group=gid,
            extra_groups=None if self.owner is None else [],
        )


def _unprivileged_owner() -> tuple[int, int] | None:
    """Whom initdb and the server run as: `nobody` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise ClusterError(f"root, and no user {UNPRIVILEGED_USER} to run initdb as") from None
    return entry.pw_uid, entry.pw_gid


def _kill_if_alive(pid: int) -> None:
    """Kill the postmaster `pid` and its group if still there, waiting (bounded) for it to go."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # pg_ctl makes the postmaster a session leader
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            return True
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is gone for our purposes


def _tail(text: str, lines: int = 15) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

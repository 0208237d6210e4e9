"""A ``redis-server`` of its own for the hosts of a cluster (``--hosts N``): soak, bench.

The same flags as the tests' ``tests/redis_server.py`` (which needs pytest):
127.0.0.1 and a free port, a temporary directory, no persistence, in the
foreground and in its own session. Ready means a PING answered by this very
process, within a deadline; ``stop`` always reaps it (SIGKILL if SIGTERM is
not enough) and removes the directory, so a failed or interrupted soak leaves
no Redis behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

HOST = "127.0.0.1"
#: seconds Redis may take to answer its first PING, and to exit after SIGTERM
TIMEOUT = 10.0
#: fresh ports to try when another process takes the one chosen before Redis binds it
PORT_ATTEMPTS = 5


def binary() -> str | None:
    """``redis-server`` on PATH, else Debian's /usr/bin one."""
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class RedisUsage:
    """Redis at one moment, as it says (``INFO``) and as the kernel says (psutil)."""

    used_memory: int
    used_memory_peak: int
    rss: int
    #: seconds of CPU, user and system (psutil ``cpu_times``)
    user: float
    system: float
    keys: int


class RedisProcess:
    """A started, empty ``redis-server``; ``stop`` (or ``with``) ends and reaps it."""

    def __init__(self, path: str | None = None, parent: Path | None = None) -> None:
        """``parent``: where the temporary directory goes (the system's by default)."""
        found = path or binary()
        if found is None:
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        self.binary = found
        self.dir = Path(tempfile.mkdtemp(prefix="redis-", dir=parent))
        self.log_path = self.dir / "redis.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.status: int | None = None  # exit status once stopped; None if it had to be killed
        self._client: redis.Redis | None = None
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _start(self) -> None:
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            if self._launch(port):
                self.port = port
                return
        raise RuntimeError(f"redis-server found no free port in {PORT_ATTEMPTS} attempts")

    def _launch(self, port: int) -> bool:
        """Run Redis on ``port``; whether it serves there (False: the port was taken)."""
        cmd = [self.binary, "--bind", HOST, "--port", str(port), "--dir", str(self.dir)]
        cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
        with open(self.log_path, "ab") as log:
            self.proc = proc = subprocess.Popen(
                cmd,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with redis.Redis(host=HOST, port=port, socket_timeout=1.0) as probe:
                    serving = probe.info("server")["process_id"]
                break
            except redis.ConnectionError:
                pass  # not listening yet
            if proc.poll() is not None:
                self.proc = None
                if "Address already in use" in self.log():
                    return False
                raise RuntimeError(f"redis-server exited on start: {self.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer in {TIMEOUT}s: {self.log()}")
            try:  # paces the loop, and notices an early exit at once
                proc.wait(0.02)
            except subprocess.TimeoutExpired:
                pass
        if serving != proc.pid:  # another Redis won the port; ours exits
            self._reap()
            return False
        return True

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis(
                host=HOST, port=self.port, socket_timeout=TIMEOUT, decode_responses=True
            )
        return self._client

    def usage(self) -> RedisUsage:
        """Memory (``INFO memory`` and RSS), CPU seconds and keys, now."""
        info = self.client().info("memory")
        p = psutil.Process(self.pid)
        with p.oneshot():
            rss, cpu = p.memory_info().rss, p.cpu_times()
        keys = int(self.client().dbsize())
        return RedisUsage(
            info["used_memory"], info["used_memory_peak"], rss, cpu.user, cpu.system, keys
        )

    def stats(self) -> dict[str, Any]:
        """Memory and, per command since the last ``reset``, calls and microseconds per call."""
        info = self.client().info()  # its stats count from the last ``reset`` too
        commands = self.client().info("commandstats")
        calls = {
            k.removeprefix("cmdstat_"): [v["calls"], round(v["usec_per_call"], 2)]
            for k, v in sorted(commands.items(), key=lambda kv: -kv[1]["usec"])
        }
        return {
            "redis_rss": psutil.Process(self.pid).memory_info().rss,
            "redis_used_memory": info["used_memory"],
            # socket reads with commands in them: a pipeline is one (or a few, if large)
            "redis_reads": info.get("total_reads_processed"),
            "redis_commands": calls,
        }

    def reset(self) -> None:
        """CONFIG RESETSTAT, so that ``stats`` counts from now."""
        self.client().config_resetstat()

    def keys(self) -> list[str]:
        return sorted(str(k) for k in self.client().keys("*"))

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _reap(self) -> None:
        """SIGKILL the whole session, and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:  # not reaped yet: the group is still ours
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None

    def stop(self) -> int | None:
        """SIGTERM (and SIGCONT), reap, remove the directory; the exit status (None: killed).

        Safe to call again, and from a ``finally`` after a failure or Ctrl-C.
        """
        if self._client is not None:
            self._client.close()
            self._client = None
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGCONT)
            try:
                self.status = proc.wait(TIMEOUT)
                self.proc = None
            except subprocess.TimeoutExpired:
                self.status = None
            finally:
                self._reap()  # only if it ignored SIGTERM, or we were interrupted waiting
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.status

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

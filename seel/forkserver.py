"""A warm interpreter that forks engine processes instead of starting each one cold.

An engine whose processes are `{python} -m MODULE ...` may list those modules under `preload:`.
Then one server process per sweep imports them once (numpy and asyncio included), and every
aggregator or party is a fork of it that runs MODULE as `__main__`. What a child sees is what a
cold start gives it: its own session and process group, the pty as its controlling terminal and
standard streams, its own working directory, environment and argv. What the controller sees is
the same too: a pid that leads its own group, output on a pty, a stop ladder that signals the
group, and an exit code.

Protocol, over a SOCK_SEQPACKET socket pair (one JSON document per packet):
  server -> controller   {"ready": true} | {"ready": false, "error": "..."}
  controller -> server   {"id": N, "module": M, "argv": [...], "cwd": D, "env": {...}} + pty fd
  server -> controller   {"id": N, "pid": P} | {"id": N, "error": "..."}
  server -> controller   {"exit": P, "code": C}      (P is a zombie until the controller says)
  controller -> server   {"reap": P}                 (after killing what is left in P's group)
The server exits when the controller's end closes, so it never outlives the controller.

Run by path (`python .../forkserver.py FD MODULE... [?MODULE...]`, through `runpy` so that its
folder does not shadow packages on sys.path): the engine's Python need not have SEEL installed,
and only the standard library is imported before the preloaded modules. A module written `?M` is
preloaded if it imports, passed over if not (the handlers a config names: a speed-up, never a
requirement). Forking is only safe from a process with one thread: a server whose preloading
started a thread says so and is not used (its processes are then started cold).
With SEEL_DIE_WITH_PARENT=1 in its environment, the server and every child it forks die with
their parent (as seel/lifeline.py does for processes spawned on a pty).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import fcntl
import importlib
import io
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import termios
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_MAX_PACKET = 1 << 20
DIE_WITH_PARENT_ENV = "SEEL_DIE_WITH_PARENT"
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In a freshly forked child: SIGKILL when the parent ends; ends now if it already has.

    Here rather than in seel.lifeline, which uses it: the server runs in a Python that may not
    have SEEL, so it must not import anything of SEEL's."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


# Runs this file by path without putting its folder (seel/, which holds a package named ibmfl)
# first on sys.path, as `python FILE` would.
_BOOT = (
    "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
_READY_TIMEOUT_S = 60.0
_SPAWN_TIMEOUT_S = 30.0


def _send(sock: socket.socket, doc: dict[str, Any]) -> None:
    sock.send(json.dumps(doc).encode())


# -- the server ---------------------------------------------------------------------------------


def _exit_code(info: Any) -> int:
    """An exit code as os.waitstatus_to_exitcode gives it, from a waitid result."""
    if info.si_code == os.CLD_EXITED:
        return int(info.si_status)
    return -int(info.si_status)


def _std_streams(unbuffered: bool) -> None:
    """Standard streams on fds 0-2 as a cold start on a terminal makes them."""

    def writer(fd: int, errors: str) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        buf: Any = raw if unbuffered else io.BufferedWriter(raw)
        return io.TextIOWrapper(
            buf, encoding="utf-8", errors=errors, line_buffering=True, write_through=unbuffered
        )

    sys.stdin = io.TextIOWrapper(
        io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8", line_buffering=True
    )
    sys.stdout = writer(1, "strict")
    sys.stderr = writer(2, "backslashreplace")


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _become(request: dict[str, Any], tty: int, started: int, parent_pid: int) -> int:
    """In the forked child: take the pty, the request's cwd, env and argv, and run the module."""
    if request["env"].get(DIE_WITH_PARENT_ENV) == "1":
        die_with_parent(parent_pid)
    os.setsid()
    fcntl.ioctl(tty, termios.TIOCSCTTY, 0)
    os.write(started, b"+")  # now the group exists: the controller may signal it
    for fd in (0, 1, 2):
        os.dup2(tty, fd)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    _std_streams(bool(os.environ.get("PYTHONUNBUFFERED")))
    if "random" in sys.modules:
        sys.modules["random"].seed()
    sys.argv = ["-m", *request["argv"]]
    sys.modules.pop(request["module"], None)  # run afresh as __main__, as `python -m` would
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = _exit_status(exc)
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def _fork(request: dict[str, Any], tty: int) -> int:
    """Fork a child for `request`; returns once the child leads its own session."""
    started_r, started_w = os.pipe()
    parent_pid = os.getpid()
    try:
        pid = os.fork()
        if pid == 0:  # the child never returns from here
            code = 1
            try:
                os.close(started_r)
                code = _become(request, tty, started_w, parent_pid)
            finally:
                os._exit(code)
        os.close(started_w)
        started_w = -1
        os.read(started_r, 1)  # empty if the child died first: it has no group to signal then
    finally:
        os.close(started_r)
        if started_w >= 0:
            os.close(started_w)
    return pid


def _threads() -> int:
    """How many threads this process has, native ones included (a BLAS pool, say)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def serve(sock: socket.socket, modules: Sequence[str]) -> int:
    """Preload `modules`, then fork a child per request until the controller goes away."""
    skipped = []
    for name in modules:
        optional = name.startswith("?")
        try:
            importlib.import_module(name.removeprefix("?"))
        except BaseException as exc:
            if optional and isinstance(exc, Exception):
                skipped.append(name[1:])
                continue
            why = f"{type(exc).__name__}: {exc}"
            print(f"seel forkserver: cannot preload {name}: {why}", file=sys.stderr, flush=True)
            _send(sock, {"ready": False, "error": why})
            return 1
    if skipped:
        print(f"seel forkserver: not preloaded: {', '.join(skipped)}", file=sys.stderr, flush=True)
    threads = _threads()
    if threads > 1:
        why = f"preloading started {threads - 1} thread(s): forking would not be safe"
        print(f"seel forkserver: {why}", file=sys.stderr, flush=True)
        _send(sock, {"ready": False, "error": why})
        return 1
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    live: set[int] = set()  # forked and not yet reported as exited
    _send(sock, {"ready": True})
    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
            for pid in sorted(live):
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is not None:
                    live.discard(pid)
                    _send(sock, {"exit": pid, "code": _exit_code(info)})
        if sock.fileno() in ready:
            data, fds, _, _ = socket.recv_fds(sock, _MAX_PACKET, 1)
            if not data:
                return 0
            request = json.loads(data)
            if "reap" in request:
                pid = int(request["reap"])
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                continue
            try:
                pid = _fork(request, fds[0])
            except OSError as exc:
                _send(sock, {"id": request["id"], "error": str(exc)})
            else:
                live.add(pid)
                _send(sock, {"id": request["id"], "pid": pid})
            finally:
                for fd in fds:
                    os.close(fd)


# -- the controller's side ----------------------------------------------------------------------


class ForkServerError(OSError):
    """The fork server could not start a process."""


class ForkServer:
    """The controller's handle on one fork server (one per sweep, started on first use)."""

    def __init__(
        self,
        python: str,
        modules: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        optional: Sequence[str] = (),
    ):
        self.python = python
        self.modules = tuple(modules)
        self.optional = tuple(m for m in optional if m not in self.modules)
        self.env = dict(env)
        self.log = log
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self.broken: str | None = None

    def accepts(self, argv: Sequence[str]) -> str | None:
        """The module to run if argv is `python -m MODULE ...` with a preloaded MODULE."""
        if len(argv) >= 3 and argv[0] == self.python and argv[1] == "-m":
            if argv[2] in self.modules:
                return argv[2]
        return None

    async def start(self) -> bool:
        """Start the server and wait until it has preloaded; False (and `broken`) if it can't."""
        if self._sock is not None or self.broken:
            return self.broken is None
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = await asyncio.to_thread(self._popen, theirs.fileno())
        except OSError as exc:
            ours.close()
            self.broken = f"cannot start {self.python}: {exc}"
            return False
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self._sock = ours
        self._ready = self._loop.create_future()
        self._loop.add_reader(ours.fileno(), self._on_readable)
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                hello = await self._ready
        except TimeoutError:
            hello = {"ready": False, "error": f"not ready within {_READY_TIMEOUT_S:g} s"}
        if not hello.get("ready"):
            self.broken = str(hello.get("error") or "the fork server ended")
            await self.aclose()
            return False
        return True

    def _popen(self, fd: int) -> subprocess.Popen[bytes]:
        from seel import lifeline  # the controller's side only: the server runs without SEEL

        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [
                    self.python,
                    "-c",
                    _BOOT,
                    str(Path(__file__).resolve()),
                    str(fd),
                    *self.modules,
                    *(f"?{m}" for m in self.optional),
                ],
                pass_fds=(fd,),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=lifeline.preexec(self.env),  # the server's own, set before exec
            )

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(_MAX_PACKET, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost("the fork server ended")
                return
            doc = json.loads(data)
            if "ready" in doc and self._ready is not None and not self._ready.done():
                self._ready.set_result(doc)
            elif "exit" in doc:
                exited = self._exits.get(int(doc["exit"]))
                if exited is not None and not exited.done():
                    exited.set_result(int(doc["code"]))
            elif "id" in doc:
                reply = self._replies.pop(int(doc["id"]), None)
                if reply is not None and not reply.done():
                    reply.set_result(doc)

    def _lost(self, why: str) -> None:
        """The server is gone: fail what waits on it. Its children, orphaned, are killed."""
        self.broken = self.broken or why
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        if self._ready is not None and not self._ready.done():
            self._ready.set_result({"ready": False, "error": why})
        for reply in self._replies.values():
            if not reply.done():
                reply.set_result({"error": why})
        for pid, exited in self._exits.items():
            if not exited.done():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                exited.set_result(None)

    async def launch(
        self, module: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str], tty: int
    ) -> tuple[int, asyncio.Future[int | None]]:
        """Fork a child running `module` on the pty slave `tty`; its pid and exit-code future."""
        if self._sock is None or self._loop is None or self.broken:
            raise ForkServerError(self.broken or "the fork server is not running")
        self._next_id += 1
        rid = self._next_id
        reply = self._loop.create_future()
        self._replies[rid] = reply
        request = {"id": rid, "module": module, "argv": list(argv[3:]), "cwd": str(cwd)}
        packet = json.dumps({**request, "env": dict(env)}).encode()
        try:
            socket.send_fds(self._sock, [packet], [tty])
            async with asyncio.timeout(_SPAWN_TIMEOUT_S):
                doc = await reply
        except (OSError, TimeoutError) as exc:
            self._replies.pop(rid, None)
            raise ForkServerError(f"fork server: {exc}") from None
        if "pid" not in doc:
            raise ForkServerError(f"fork server: {doc.get('error')}")
        pid = int(doc["pid"])
        exited = self._exits.setdefault(pid, self._loop.create_future())
        return pid, exited

    def reap(self, pid: int) -> None:
        """Let the server reap a child whose exit was reported (its group killed first)."""
        self._exits.pop(pid, None)
        if self._sock is not None and not self.broken:
            with contextlib.suppress(OSError):
                _send(self._sock, {"reap": pid})

    async def aclose(self) -> None:
        """Close the controller's end; the server exits, and is waited for."""
        if self._sock is not None:
            if self._loop is not None and not self.broken:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self.broken = self.broken or "closed"
        proc = self._proc
        if proc is not None:
            try:
                await asyncio.to_thread(proc.wait, 5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


def main(argv: Sequence[str]) -> int:
    fd, *modules = argv
    sock = socket.socket(fileno=int(fd))
    try:
        return serve(sock, modules)
    except (BrokenPipeError, ConnectionResetError):
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

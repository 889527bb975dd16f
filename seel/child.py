"""One process on a pseudo-terminal, driven from asyncio. The only module that imports pexpect.

pexpect spawns the child (its own session, so its own process group) and sends lines with
`delaybeforesend=None`. Everything that would block or sleep in pexpect is done here instead:

1. Output is read by an event-loop reader on the pty, split into lines, written to the transcript
   with timestamps as it arrives, and kept only as a bounded tail: a child that prints 100 MB
   does not grow the controller.
2. Exit is seen through a pidfd, so nothing polls; the child is reaped here, never by pexpect.
   A child forked by the fork server (seel/forkserver.py) is started on a pty made here, and its
   exit is reported by the server, which reaps it when told to.
3. Stopping is a ladder: the engine's stop line, a grace period, SIGTERM to the group, a grace
   period, SIGKILL. Every rung is written to the transcript.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import fcntl
import os
import re
import signal
import struct
import termios
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pexpect

from seel import lifeline
from seel.errors import SeelError
from seel.forkserver import ForkServer, ForkServerError
from seel.proctree import SessionTree
from seel.reasons import ANSI, FirstError

_READ_SIZE = 1 << 16
_DIMENSIONS = (24, 500)
_TREE_SCAN_S = 1.0  # how often, at most, output prompts a look for descendants in new sessions


@dataclass(frozen=True)
class Line:
    """One line of a child's output; `seq` counts lines from 1."""

    seq: int
    time: float
    text: str


class ChildError(SeelError):
    """A child did not do what a step waited for."""

    def __init__(self, child: str, message: str, tail: Sequence[str]) -> None:
        self.child = child
        self.tail = list(tail)
        super().__init__(message)


class MarkerTimeout(ChildError):
    """A marker was not seen within its timeout."""

    def __init__(self, child: str, marker: str, waited_s: float, tail: Sequence[str]) -> None:
        self.marker = marker
        self.waited_s = waited_s
        super().__init__(child, f"{child}: {marker!r} not seen within {waited_s:g} s", tail)


class ChildExited(ChildError):
    """A child ended while a step still waited on it."""

    def __init__(self, child: str, exit_code: int | None, tail: Sequence[str]) -> None:
        self.exit_code = exit_code
        super().__init__(child, f"{child} exited with code {exit_code}", tail)


class FailureSeen(ChildError):
    """A child printed one of the engine's failure markers."""

    def __init__(self, child: str, marker: str, line: str, tail: Sequence[str]) -> None:
        self.marker = marker
        self.line = line
        super().__init__(child, f"{child}: {line.strip()}", tail)


Matcher = Callable[[str], bool]


def matcher(marker: str | re.Pattern[str]) -> Matcher:
    """A predicate for a substring marker or a compiled regex."""
    if isinstance(marker, re.Pattern):
        return lambda text: marker.search(text) is not None
    return lambda text: marker in text


@dataclass
class _Waiter:
    match: Matcher
    since: int
    future: asyncio.Future[Line]


class Child:
    """A process on a pty with line-based waiting, a transcript and a stop ladder."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        transcript: Path | None = None,
        failure_markers: Sequence[str] = (),
        on_line: Callable[[Child, Line], None] | None = None,
        watch: Sequence[str | re.Pattern[str]] = (),
        tail_lines: int = 200,
        max_line_chars: int = 16_384,
        transcript_limit_bytes: int = 64 << 20,
        forked: tuple[ForkServer, int, int, asyncio.Future[int | None]] | None = None,
        strip_ansi: bool = False,
        tree: bool = False,
    ) -> None:
        self.name = name
        self._strip_ansi = strip_ansi
        self._loop = asyncio.get_running_loop()
        self._failure_markers = tuple(failure_markers)
        # Lines matching a marker the caller will wait for, kept apart from the bounded tail so a
        # marker that came before its wait is found however much output followed it.
        self._watched: dict[str | re.Pattern[str], deque[Line]] = {
            m: deque(maxlen=16) for m in watch
        }
        self._watch_match = {m: matcher(m) for m in watch}
        self._on_line = on_line
        self.tail_lines = tail_lines
        self._tail: deque[Line] = deque(maxlen=tail_lines)
        self._first_error = FirstError()  # read as lines pass: the tail may have lost it
        self._max_line = max_line_chars
        self._partial = ""
        self._seq = 0
        self._waiters: list[_Waiter] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._transcript: IO[bytes] | None = None
        self._transcript_limit = transcript_limit_bytes
        self._transcript_left = transcript_limit_bytes
        self._t0 = time.monotonic()
        self.failure: FailureSeen | None = None
        self.failures: list[FailureSeen] = []  # the first line of each failure marker seen
        self.eof = False
        self.exit_code: int | None = None
        self.exited: asyncio.Future[int | None] = self._loop.create_future()
        if transcript is not None:
            self._transcript = transcript.open("ab", buffering=0)
        self._proc: pexpect.spawn | None = None
        self._server = forked[0] if forked is not None else None
        self._pidfd = -1
        if forked is None:
            self._proc = pexpect.spawn(
                argv[0],
                list(argv[1:]),
                cwd=str(cwd),
                env=dict(env) if env is not None else None,
                echo=False,
                dimensions=_DIMENSIONS,
                preexec_fn=lifeline.preexec(env),
            )
            for owner in (self._proc, self._proc.ptyproc):
                owner.delaybeforesend = None
                owner.delayafterclose = 0
                owner.delayafterterminate = 0
            self.pid: int = self._proc.pid
            self.pgid: int = os.getpgid(self.pid)
            self._fd: int = self._proc.child_fd
        else:
            _, self.pid, self._fd, exited = forked
            self.pgid = self.pid  # the fork server's child leads its own session
        # Descendants that open sessions of their own, for the stop ladder to reach them too.
        self.tree = SessionTree(self.pid, self.pgid) if tree else None
        self._tree_scanned = 0.0
        how = "spawned" if forked is None else "forked"
        self._note(f"{how} pid {self.pid} (group {self.pgid}): {' '.join(argv)}")
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._on_readable)
        if forked is None:
            self._pidfd = os.pidfd_open(self.pid)
            self._loop.add_reader(self._pidfd, self._on_exit)
        else:
            exited.add_done_callback(self._on_forked_exit)

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        forkserver: ForkServer | None = None,
        **options: Any,
    ) -> Child:
        """A child forked by the fork server when it preloads argv's module, else spawned.

        A server that has gone away (or fails this request) is passed over: the child is spawned.
        """
        module = forkserver.accepts(argv) if forkserver is not None else None
        if forkserver is None or module is None or forkserver.broken:
            return cls(name, argv, cwd=cwd, env=env, **options)
        master, tty = os.openpty()
        try:
            attrs = termios.tcgetattr(tty)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(tty, termios.TCSANOW, attrs)
            fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", *_DIMENSIONS, 0, 0))
            pid, exited = await forkserver.launch(module, argv, cwd, env, tty)
        except ForkServerError:
            os.close(master)
            return cls(name, argv, cwd=cwd, env=env, **options)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(tty)
        return cls(
            name, argv, cwd=cwd, env=env, forked=(forkserver, pid, master, exited), **options
        )

    # -- output -----------------------------------------------------------------------------

    def mark(self) -> int:
        """The sequence number the next line will have: pass it as `since` to wait for new output."""
        return self._seq + 1

    def switch(
        self,
        transcript: Path | None,
        on_line: Callable[[Child, Line], None] | None,
        note: str,
    ) -> None:
        """Hand the process to a new owner: `note` ends the old transcript and starts `transcript`
        (None: keep writing the old one), and its lines go to `on_line` from now on.

        Its first error is forgotten: what it printed for an earlier owner explains nothing now.
        """
        self._note(note)
        if transcript is not None:
            if self._transcript is not None:
                self._transcript.close()
            self._transcript = transcript.open("ab", buffering=0)
            self._transcript_left = self._transcript_limit  # each transcript has the same cap
            self._note(note)
        self._on_line = on_line
        self._first_error = FirstError()

    def tail(self, n: int = 20) -> list[str]:
        return [line.text for line in list(self._tail)[-n:]]

    @property
    def first_error(self) -> str | None:
        """The first error this process printed (seel/reasons.py), or None."""
        return self._first_error.cause

    def _write_transcript(self, text: str, note: bool = False) -> None:
        """Stamp and write a line; output stops at the size limit, SEEL's own notes never do."""
        if self._transcript is None:
            return
        data = f"{time.monotonic() - self._t0:10.3f} {text}\n".encode("utf-8", "replace")
        if not note:
            if self._transcript_left <= 0:
                return
            if len(data) > self._transcript_left:
                self._transcript_left = 0
                notice = f"{time.monotonic() - self._t0:10.3f} # seel: transcript limit reached\n"
                data = notice.encode()
            else:
                self._transcript_left -= len(data)
        try:
            self._transcript.write(data)
        except OSError as exc:  # a full disk must not stop the trial
            with contextlib.suppress(OSError):
                self._transcript.write(f"# seel: transcript write failed: {exc}\n".encode())
            self._transcript.close()
            self._transcript = None

    def _note(self, text: str) -> None:
        self._write_transcript(f"# seel: {text}", note=True)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EBADF):
                raise
            data = b""
        if not data:
            self._on_eof()
            return
        text = self._partial + self._decoder.decode(data)
        *complete, self._partial = text.split("\n")
        for raw in complete:
            self._add_line(raw)
        if len(self._partial) > self._max_line:
            self._add_line(self._partial)
            self._partial = ""
        elif self._partial:
            partial = self._partial.rstrip("\r")
            if self._strip_ansi:
                partial = ANSI.sub("", partial)
            self._check_waiters(Line(self._seq + 1, time.monotonic(), partial))

    def _add_line(self, raw: str) -> None:
        text = raw.rstrip("\r")
        if self._strip_ansi:
            text = ANSI.sub("", text)
        text = text[: self._max_line]
        if self.tree is not None and time.monotonic() - self._tree_scanned > _TREE_SCAN_S:
            self._tree_scanned = time.monotonic()
            self.tree.scan()
        self._seq += 1
        line = Line(self._seq, time.monotonic(), text)
        self._tail.append(line)
        self._write_transcript(text)
        self._first_error.feed(text)
        for marker in self._failure_markers:
            if marker in text and all(f.marker != marker for f in self.failures):
                self.failures.append(FailureSeen(self.name, marker, text, self.tail()))
                if self.failure is None:
                    self.failure = self.failures[-1]
        for key, seen in self._watched.items():
            if self._watch_match[key](text):
                seen.append(line)
        if self._on_line is not None:
            self._on_line(self, line)
        self._check_waiters(line)

    def _check_waiters(self, line: Line) -> None:
        for waiter in list(self._waiters):
            if waiter.future.done():
                continue
            if self.failure is not None:
                waiter.future.set_exception(self.failure)
            elif line.seq >= waiter.since and waiter.match(line.text):
                waiter.future.set_result(line)

    def _on_eof(self) -> None:
        if self.eof:
            return
        self.eof = True
        if self._partial:
            self._add_line(self._partial)
            self._partial = ""
        self._loop.remove_reader(self._fd)

    def _fail_waiters(self) -> None:
        error: ChildError = self.failure or ChildExited(self.name, self.exit_code, self.tail())
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        # The child is a zombie until reaped, so its group id cannot have been reused: kill
        # whatever it left behind in its group before reaping it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        self._kill_tree()
        _, status = os.waitpid(self.pid, 0)
        self._finish(os.waitstatus_to_exitcode(status))

    def _on_forked_exit(self, exited: asyncio.Future[int | None]) -> None:
        # The fork server holds the zombie until told to reap it, for the same reason.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        self._kill_tree()
        assert self._server is not None
        self._server.reap(self.pid)
        self._finish(exited.result())

    def _kill_tree(self) -> None:
        """SIGKILL the sessions of descendants seen so far (they may outlive the child)."""
        if self.tree is not None:
            groups = self.tree.signal(signal.SIGKILL)
            if groups:
                self._note(f"sent SIGKILL to descendant groups {groups}")

    def _finish(self, exit_code: int | None) -> None:
        self.exit_code = exit_code
        self._on_readable_until_drained()
        self._on_eof()
        self._note(f"exited with code {self.exit_code}")
        self._fail_waiters()
        if not self.exited.done():
            self.exited.set_result(self.exit_code)

    def _on_readable_until_drained(self) -> None:
        while not self.eof:
            before = self._seq, self._partial
            self._on_readable()
            if (self._seq, self._partial) == before:
                break

    # -- waiting and sending --------------------------------------------------------------

    async def expect(self, marker: str | re.Pattern[str], timeout_s: float, since: int = 1) -> Line:
        """Wait for a line with `marker` numbered `since` or later; raise on timeout or failure."""
        match = matcher(marker)
        earlier: list[Line] = [*self._watched.get(marker, ()), *self._tail]
        for line in earlier:
            if line.seq >= since and match(line.text):
                return line
        if self.failure is not None:
            raise self.failure
        if self.exited.done():
            raise ChildExited(self.name, self.exit_code, self.tail())
        waiter = _Waiter(match, since, self._loop.create_future())
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                found: Line = await waiter.future
                return found
        except TimeoutError:
            label = marker.pattern if isinstance(marker, re.Pattern) else marker
            raise MarkerTimeout(self.name, label, timeout_s, self.tail()) from None
        finally:
            self._waiters.remove(waiter)

    def send_line(self, text: str) -> None:
        """Type a line on the child's terminal."""
        if self.exited.done():
            raise ChildExited(self.name, self.exit_code, self.tail())
        self._note(f"sent {text!r}")
        try:
            os.write(self._fd, (text + "\n").encode())
        except OSError:
            raise ChildExited(self.name, self.exit_code, self.tail()) from None

    async def wait_exit(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the child to end; True if it did."""
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self.exited)
        except TimeoutError:
            return False
        return True

    def _signal_group(self, sig: signal.Signals, wait_s: float) -> None:
        if self.exited.done():
            return
        self._note(
            f"sending {sig.name} to group {self.pgid} (pid {self.pid}), waiting {wait_s:g} s"
        )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        if self.tree is not None:
            groups = self.tree.signal(sig)
            if groups:
                self._note(
                    f"sending {sig.name} to descendant groups {groups} in their own sessions"
                )

    def kill(self) -> None:
        """SIGKILL the child's group and what it started in sessions of its own (a fault)."""
        if self.tree is not None and not self.exited.done():
            self.tree.scan()
        self._signal_group(signal.SIGKILL, 0.0)

    async def stop(self, line: str | None, grace_s: float, term_grace_s: float) -> int | None:
        """The stop ladder: `line`, wait, SIGTERM the group, wait, SIGKILL. Returns the exit code.

        A child that printed a failure marker is on its way out: it gets the grace period to end
        by itself, so that its last words (the end of a traceback) and exit code are its own.
        """
        wait_first = False
        if self.tree is not None and not self.exited.done():
            self.tree.scan()  # while the child is alive, its descendants can be found
        if not self.exited.done() and line is not None:
            with contextlib.suppress(ChildExited):
                self.send_line(line)
            self._note(f"waiting {grace_s:g} s for exit after {line!r}")
            wait_first = True
        elif not self.exited.done() and self.failure is not None:
            self._note(f"waiting {grace_s:g} s for exit after {self.failure.marker!r}")
            wait_first = True
        if not wait_first or not await self.wait_exit(grace_s):
            self._signal_group(signal.SIGTERM, term_grace_s)
            if not await self.wait_exit(term_grace_s):
                self._signal_group(signal.SIGKILL, 30.0)
                await self.wait_exit(30.0)
        if self.tree is not None and self.tree.scan():
            # The child is gone; what it started in other sessions had the SIGTERM and the
            # term grace period, while the child went down, and now goes too.
            self._kill_tree()
        return self.exit_code

    def close(self) -> None:
        """Release the pty and pidfd; the child must have exited or been stopped first."""
        if not self.eof:
            self._loop.remove_reader(self._fd)
            self.eof = True
        if not self.exited.done() and self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
        if self._pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.ptyproc.fileobj.close()
            self._proc.ptyproc.closed = True
            self._proc.closed = True
            self._proc.child_fd = -1
        else:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        if self._transcript is not None:
            self._transcript.close()
            self._transcript = None

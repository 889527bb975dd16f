"""The interactive command loop shared by the aggregator and the party.

Commands arrive one per line on standard input and run one at a time. STOP is special: it cancels
the command in progress so that a training run can always be stopped. End of input counts as STOP.

Standard input is read by a thread with blocking reads. Reading it through asyncio would make the
terminal's file description non-blocking, and on a pty that description is shared with standard
output, so a slow reader on the other side would turn our log writes into BlockingIOError.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from seel.fl.log import Logger

Handler = Callable[[], Awaitable[int | None]]
STOP = "STOP"


class Console:
    """Runs named command handlers; a handler returning an int ends the loop with that code."""

    def __init__(
        self, handlers: dict[str, Handler], log: Logger, stdin: TextIO | None = None
    ) -> None:
        self._handlers = handlers
        self._log = log
        self._stdin = stdin if stdin is not None else sys.stdin
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._current: asyncio.Task[int | None] | None = None

    def exit(self, code: int) -> None:
        """End the loop with `code` (for example after a STOP that came over the network)."""
        if not self._exit.done():
            self._exit.set_result(code)
        if self._current is not None:
            self._current.cancel()

    def _on_line(self, line: str) -> None:
        if line.upper() == STOP and self._current is not None:
            self._current.cancel()
        self._lines.put_nowait(line)

    def _read_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                raw = self._stdin.readline()
            except (OSError, ValueError):
                raw = ""
            line = raw.strip() if raw else STOP
            try:
                loop.call_soon_threadsafe(self._on_line, line)
            except RuntimeError:  # the loop has closed
                return
            if not raw:
                return

    async def _until_exit(self, aw: Awaitable[Any]) -> tuple[bool, asyncio.Future[Any]]:
        """Wait for `aw` or for exit(); returns (exited, the task running `aw`)."""
        task: asyncio.Future[Any] = asyncio.ensure_future(aw)
        waiters: set[asyncio.Future[Any]] = {task, self._exit}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if self._exit.done() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return True, task
        return False, task

    async def run(self) -> int:
        """Serve commands until a handler or exit() gives an exit code."""
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read_stdin, args=(loop,), daemon=True).start()
        while True:
            exited, got = await self._until_exit(self._lines.get())
            if exited:
                return self._exit.result()
            command = str(got.result()).upper()
            if not command:
                continue
            handler = self._handlers.get(command)
            if handler is None:
                self._log.error(
                    f"Unknown command: {command} (expected one of {', '.join(self._handlers)})"
                )
                continue
            self._current = asyncio.ensure_future(handler())
            try:
                exited, _ = await self._until_exit(self._current)
                if exited:
                    return self._exit.result()
                code = await self._current
            except asyncio.CancelledError:
                if self._current.cancelled() and not self._exit.done():
                    self._log.warning(f"{command} interrupted by STOP")
                    continue
                raise
            finally:
                self._current = None
            if code is not None:
                return code

"""Messages between the aggregator and its parties over TCP: a JSON header plus `.npy` arrays.

Frame: b"SEFL", header length (4 bytes, big-endian), body length (8 bytes), the JSON header, then
the body, which is the arrays in `.npy` format back to back; the header lists their byte sizes.
Nothing is ever unpickled. A frame that is malformed or larger than the limit raises WireError.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import math
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from seel.fl.config import Endpoint
    from seel.fl.log import Logger

EXIT_ADDRESS_IN_USE = 3  # a process's exit code when it cannot listen where its config says

_MAGIC = b"SEFL"
_PREFIX = struct.Struct(">4sIQ")
_MAX_HEADER = 1 << 20


class WireError(Exception):
    """A message that is malformed, too large, or cut short."""


@dataclass
class Message:
    """One message: a kind, JSON fields and numpy arrays."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    arrays: list[npt.NDArray[Any]] = field(default_factory=list)


def encode(message: Message) -> bytes:
    """Serialize a message into one frame."""
    blobs = []
    for array in message.arrays:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
        blobs.append(buf.getvalue())
    header = json.dumps(
        {"kind": message.kind, "fields": message.fields, "arrays": [len(b) for b in blobs]},
        separators=(",", ":"),
    ).encode()
    body = b"".join(blobs)
    return _PREFIX.pack(_MAGIC, len(header), len(body)) + header + body


def decode(header_bytes: bytes, body: bytes) -> Message:
    """Parse a frame's header and body; raises WireError on anything unexpected."""
    try:
        header = json.loads(header_bytes)
    except (ValueError, RecursionError) as exc:  # not JSON, nested too deep, a 5000-digit int
        raise WireError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("header is not an object")
    kind, fields, sizes = header.get("kind"), header.get("fields", {}), header.get("arrays", [])
    if not isinstance(kind, str) or not isinstance(fields, dict) or not isinstance(sizes, list):
        raise WireError("header lacks kind, fields or arrays")
    if not all(isinstance(s, int) and s >= 0 for s in sizes) or sum(sizes) != len(body):
        raise WireError("array sizes do not add up to the body")
    arrays = []
    offset = 0
    for size in sizes:
        arrays.append(_read_array(body[offset : offset + size]))
        offset += size
    return Message(kind, fields, arrays)


def _read_array(blob: bytes) -> npt.NDArray[Any]:
    """One `.npy` array whose header declares exactly the bytes that follow it; never objects.

    The header is checked before the array is allocated, so a few bytes cannot claim terabytes.
    numpy parses the header with tokenize and ast.literal_eval; whatever they raise on hostile
    bytes means a bad array.
    """
    fp = io.BytesIO(blob)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise WireError(f"bad array: .npy version {version} is not accepted")
        if dtype.hasobject:
            raise WireError("bad array: object arrays are not accepted")
        declared = math.prod(shape) * dtype.itemsize
        if fp.tell() + declared != len(blob):
            raise WireError(
                f"bad array: its header declares {declared} bytes of data, the frame has "
                f"{len(blob) - fp.tell()}"
            )
        fp.seek(0)
        array: npt.NDArray[Any] = np.lib.format.read_array(fp, allow_pickle=False)
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"bad array: {exc}") from None
    return array


async def read_message(reader: asyncio.StreamReader, max_bytes: int) -> Message:
    """Read one frame; WireError if it is malformed, over `max_bytes` or cut short."""
    try:
        prefix = await reader.readexactly(_PREFIX.size)
    except asyncio.IncompleteReadError as exc:
        raise WireError("connection closed" if not exc.partial else "frame cut short") from None
    magic, header_len, body_len = _PREFIX.unpack(prefix)
    if magic != _MAGIC:
        raise WireError("not a seel.fl frame")
    if header_len > _MAX_HEADER or header_len + body_len > max_bytes:
        raise WireError(
            f"message of {header_len + body_len} bytes is over the limit of {max_bytes}"
        )
    try:
        header = await reader.readexactly(header_len)
        body = await reader.readexactly(body_len)
    except asyncio.IncompleteReadError:
        raise WireError("frame cut short") from None
    return decode(header, body)


async def write_message(writer: asyncio.StreamWriter, message: Message) -> None:
    """Send one frame and wait until it is flushed."""
    writer.write(encode(message))
    await writer.drain()


async def request(host: str, port: int, message: Message, max_bytes: int) -> Message:
    """Open a connection, send `message`, return the reply; the connection is closed after."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await write_message(writer, message)
        return await read_message(reader, max_bytes)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def listen(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    endpoint: Endpoint,
    log: Logger,
) -> asyncio.Server | None:
    """A server on `endpoint`; None, with an ERROR line saying why (IBM FL's words for a taken
    port, which SEEL's engine definition matches), when it cannot listen there."""
    try:
        server = await asyncio.start_server(serve, endpoint.host, endpoint.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log.error(f"Address already in use: {endpoint}")
        else:
            log.error(f"Cannot listen on {endpoint}: {exc.strerror or exc}")
        return None
    log.info(f"Listening on {endpoint}")
    return server

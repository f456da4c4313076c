"""Sending a stream to Icecast: an HTTP PUT whose body is the stream.

The source password travels in the request's Authorization header, never in a
command line. Shared by the per-channel relay and the ``format: copy`` sources.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass

from bus_schemas.errors import TidzamError


class IcecastRefused(TidzamError, RuntimeError):
    """Icecast did not accept the mount (bad password, mount in use, server down)."""


@dataclass(frozen=True)
class IcecastTarget:
    host: str
    port: int
    password: str

    def put_request(self, mount: str, name: str, content_type: str = "audio/ogg") -> bytes:
        auth = base64.b64encode(f"source:{self.password}".encode()).decode()
        return (f"PUT {mount} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Basic {auth}\r\nUser-Agent: tidzam\r\n"
                f"Content-Type: {content_type}\r\nIce-Public: 0\r\nIce-Name: {name}\r\n"
                "Expect: 100-continue\r\n\r\n").encode()

    async def open(self, mount: str, name: str,
                   content_type: str = "audio/ogg") -> asyncio.StreamWriter:
        """A connection on which Icecast now expects the stream's bytes."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5)
        writer.write(self.put_request(mount, name, content_type))
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        if b" 100 " not in status and b" 200 " not in status:
            writer.close()
            raise IcecastRefused(f"Icecast refused {mount}: "
                                 f"{status.decode(errors='replace').strip()}")
        while (await asyncio.wait_for(reader.readline(), 5)).strip():
            pass  # the rest of the interim response's headers
        return writer

"""One kept-open HTTP/1.1 client connection (``h11`` over asyncio streams): the rest-hooks'
outbound path (``server/outbound.py`` with ``keep_alive``).

A pool of such connections costs nothing per request beyond the exchange itself: the event
loop notices a peer's close as it happens (``reusable`` reads the stream's state, no socket
poll), where a general-purpose pool checks each kept connection's socket before every request.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

import h11

READ_CHUNK = 65_536


class ExchangeError(Exception):
    """The exchange failed; ``answered`` tells whether any response byte came back (a reused
    connection the peer closed before answering may be tried again on a new one)."""

    def __init__(self, message: str, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class TooLarge(Exception):
    """The response body passed the cap."""


class Connection:
    """One HTTP/1.1 connection, used by one exchange at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.CLIENT)
        self.used = False  # an exchange completed on it (a kept, not a fresh, connection)

    @classmethod
    async def open(
        cls,
        address: str,
        port: int,
        tls: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float,
    ) -> Connection:
        """Connect to the checked ``address`` (TLS with ``server_hostname`` as the name to
        verify and send); raises ``OSError`` or ``TimeoutError``."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                address,
                port,
                ssl=tls,
                server_hostname=server_hostname if tls is not None else None,
                limit=READ_CHUNK,
            )
        return cls(reader, writer)

    def reusable(self) -> bool:
        """Idle, and not closed by either side."""
        return (
            self._h11.our_state is h11.IDLE
            and not self._reader.at_eof()
            and not self._writer.is_closing()
        )

    async def exchange(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: float,
        max_bytes: int,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request and read its response within ``timeout`` seconds: status,
        headers, body; raises ``ExchangeError`` or ``TooLarge`` (the connection is then
        closed)."""
        answered = False
        try:
            async with asyncio.timeout(timeout):
                request = h11.Request(
                    method=method,
                    target=target,
                    headers=[*headers, ("Content-Length", str(len(body)))],
                )
                data = self._h11.send(request) or b""
                data += self._h11.send(h11.Data(data=body)) or b""
                data += self._h11.send(h11.EndOfMessage()) or b""
                self._writer.write(data)
                await self._writer.drain()
                status = 0
                response_headers: list[tuple[bytes, bytes]] = []
                content = bytearray()
                while True:
                    event = self._h11.next_event()
                    if event is h11.NEED_DATA:
                        chunk = await self._reader.read(READ_CHUNK)
                        self._h11.receive_data(chunk)
                        answered = answered or bool(chunk)
                    elif isinstance(event, h11.InformationalResponse):
                        continue
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                        response_headers = list(event.headers)
                    elif isinstance(event, h11.Data):
                        content += event.data
                        if len(content) > max_bytes:
                            raise TooLarge(f"response larger than {max_bytes} bytes")
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:  # ConnectionClosed before the response ended
                        raise ExchangeError("the connection closed", answered)
        except TooLarge:
            self.close()
            raise
        except TimeoutError as exc:
            self.close()
            raise ExchangeError("timed out", True) from exc
        except (OSError, h11.ProtocolError) as exc:
            self.close()
            raise ExchangeError(type(exc).__name__, answered) from exc
        except BaseException:
            self.close()
            raise
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self.used = True
        else:
            self.close()
        return status, response_headers, bytes(content)

    def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()

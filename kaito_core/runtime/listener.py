"""uvicorn, configured so a slow or silent client cannot hold a connection for ever.

uvicorn (0.54) has a keep-alive timeout but none for a request head that never completes: its
h11 protocol cancels the keep-alive timer on the first byte, so a client that sends half a
header and stops keeps the connection open indefinitely (100 such connections were still held
after 65 s). :class:`TimedH11Protocol` closes a connection whose request head is not complete
within ``--timeout-header`` seconds; the body is bounded per chunk by ``--timeout-body`` in
:func:`kaito_core.runtime.http.read_json`; idle keep-alive connections by ``--timeout-keep-alive``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request head."""

    header_timeout: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # IDLE on their side: bytes of a request head came, but not the whole head yet
        if self.conn.their_state is h11.IDLE:
            self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if getattr(self, "_head_timer", None) is None and self.header_timeout:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose request head did not arrive within %ss", self.header_timeout)
            self.transport.close()


def protocol_class(header_timeout: float) -> type[H11Protocol]:
    """A :class:`TimedH11Protocol` subclass bound to this server's head timeout."""
    return type("KaitoH11Protocol", (TimedH11Protocol,), {"header_timeout": float(header_timeout)})


def uvicorn_config(app: Any, *, host: str, port: int, log_level: str = "info", header_timeout: float = 30.0,
                   keep_alive_timeout: float = 5.0, max_header_bytes: int | None = None, **kw: Any) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol_class(header_timeout),
                          timeout_keep_alive=keep_alive_timeout, h11_max_incomplete_event_size=max_header_bytes,
                          **kw)

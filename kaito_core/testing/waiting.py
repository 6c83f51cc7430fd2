"""Polling for system tests: wait until a probe returns something truthy."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Call ``fn`` until it returns a truthy value and return it. An exception counts as "not
    yet"; after ``timeout`` seconds the AssertionError names ``what`` and the last result."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last error
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

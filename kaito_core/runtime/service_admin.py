"""Loading and unloading LoRA adapters at run time (``/v1/load_lora_adapter`` & co.), as a part of
:class:`~kaito_core.runtime.service.TransformersService`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kaito_core.runtime.errors import APIError, bad_param


class AdapterAdmin:
    """Mixed into the service, which provides ``adapters``, ``engine``, ``opts``, ``_admin_lock``,
    ``_fetching``, ``require_ready`` and ``base_names``."""

    async def load_adapter(self, name: str, source: str, strength: float) -> Any:
        """Fetch (maybe pull) and load an adapter. The admin lock is held only to check and
        reserve the name and for the load itself, never while fetching: an unreachable
        registry once held it for 131 s, blocking every other admin call. The fetch is bounded
        by ``--adapter-fetch-timeout`` (a timed-out pull finishes in the background, into a
        directory of its own, and is thrown away)."""
        from kaito_core.runtime.loader import ModelLoadError
        from kaito_core.runtime.oci import OCIError
        from kaito_core.runtime.options import OptionsError

        self.require_ready()
        async with self._admin_lock:
            if name in self.adapters.adapters or name in self._fetching:
                raise APIError(409, f"adapter {name!r} is already loaded or being loaded; unload it first",
                               param="name", code="adapter_exists")
            if name in self.base_names():
                raise bad_param("name", name, "a name other than the base model's")
            self._fetching.add(name)
        timeout = self.opts.adapter_fetch_timeout or None
        try:
            fetch = asyncio.to_thread(self.adapters.fetch, name, source)
            try:
                path = await asyncio.wait_for(fetch, timeout)
            except asyncio.TimeoutError:
                raise APIError(504, f"fetching adapter {name!r} from {source!r} took longer than {timeout:g}s "
                                    "(--adapter-fetch-timeout); is the registry reachable from this pod?",
                               param="source", type="server_error", code="adapter_fetch_timeout") from None

            def load() -> Any:
                info = self.adapters.load(name, source, strength, path=path)
                self.engine.model = self.adapters.model  # the PeftModel after the first adapter
                return info

            async with self._admin_lock:
                return await self.engine.acall(load)
        except (ModelLoadError, OCIError, OptionsError) as exc:
            raise APIError(400, str(exc), param="source", code="adapter_load_failed") from None
        finally:
            self._fetching.discard(name)

    async def unload_adapter(self, name: str) -> Any:
        self.require_ready()
        async with self._admin_lock:
            if name not in self.adapters.adapters:
                raise APIError(404, f"adapter {name!r} is not loaded; loaded: {sorted(self.adapters.adapters)}",
                               param="name", code="adapter_not_found")

            def unload() -> Any:
                busy = self.engine.busy_adapters.get(name, 0)
                if busy:
                    raise APIError(409, f"adapter {name!r} is serving {busy} request(s); retry when they finish",
                                   param="name", code="adapter_in_use")
                info = self.adapters.unload(name)
                self.engine.model = self.adapters.model
                return info

            return await self.engine.acall(unload)

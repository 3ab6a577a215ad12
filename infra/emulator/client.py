"""Control-API client for code that runs the emulator in another process (the stack, the demo)."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientSession

from infra.emulator.faults import ANY


class EmulatorClient:
    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")
        self._session: ClientSession | None = None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None:
            self._session = ClientSession()
        async with self._session.request(method, self._base + path, **kwargs) as resp:
            resp.raise_for_status()
            return await resp.json() if resp.status != 204 else None

    async def messages(self, channel: str | None = None,
                       to: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("channel", channel), ("to", to)) if v is not None}
        found: list[dict[str, Any]] = (
            await self._call("GET", "/_emulator/messages", params=params))["messages"]
        return found

    async def add_fault(self, recipient: str, kind: str, channel: str = ANY,
                        times: int | None = None, retry_after: int = 1, delay: float = 0) -> str:
        spec = {"recipient": recipient, "kind": kind, "channel": channel, "times": times,
                "retry_after": retry_after, "delay": delay}
        fault_id: str = (await self._call("POST", "/_emulator/faults", json=spec))["id"]
        return fault_id

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_emulator/faults")

    async def reset(self) -> None:
        await self._call("DELETE", "/_emulator/messages")

    async def stats(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = await self._call("GET", "/_emulator/stats")
        return found

    async def health(self) -> bool:
        return bool((await self._call("GET", "/_emulator/health"))["status"] == "ok")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> EmulatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

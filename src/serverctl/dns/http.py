"""The HTTP side of HTTP-API providers: one httpx client per provider (the test seam), with
connection failures, timeouts and TLS errors translated into `ProviderUnreachable`."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from serverctl.errors import ProviderUnreachable


class ProviderHttp:
    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers or {},
            timeout=timeout,
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ProviderUnreachable(f"{self.base_url} did not answer in time ({exc})") from exc
        except httpx.ConnectError as exc:
            if _is_tls_error(exc):
                raise ProviderUnreachable(f"TLS error talking to {self.base_url}: {exc}") from exc
            raise ProviderUnreachable(f"cannot reach {self.base_url}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ProviderUnreachable(f"HTTP error talking to {self.base_url}: {exc}") from exc

    def close(self) -> None:
        self._client.close()


def _is_tls_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False

"""The REST API's routes read JSON bodies strictly (`serverctl.strict_json`).

FastAPI parses a JSON body with `Request.json()`, that is Python's lenient `json.loads`. The
routers of the operator API use `StrictJSONRoute` (FastAPI's custom route class) instead, so a
body with NaN, an infinite number or a lone surrogate is refused where it is read; `api.errors`
answers `400 {"detail": "the body is not valid JSON: ..."}` as for any malformed body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from serverctl.strict_json import loads_strict


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is parsed by `loads_strict`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict

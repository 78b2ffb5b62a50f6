"""The control plane's HTTP surface as the code declares it, without a server running: the
OpenAPI document and every route (web pages included), for suites that walk all of them at
collection time, before their server starts."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from serverctl.app import create_app
from serverctl.config import Settings


@contextmanager
def _app() -> Iterator[FastAPI]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp)))
        try:
            yield app
        finally:
            app.state.serverctl.db.dispose()


def openapi_document() -> dict[str, Any]:
    """The document `serve` publishes at /openapi.json."""
    with _app() as app:
        return app.openapi()


def parameterised_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route with a path parameter, HEAD left out."""
    with _app() as app:
        return sorted(
            (method, context.path)
            for context in iter_route_contexts(app.routes)
            if context.path and "{" in context.path
            for method in context.methods or ()
            if method != "HEAD"
        )

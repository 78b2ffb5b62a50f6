"""Every route of the app, found rather than listed, so a new route is covered by the suites
that walk them (auth, secrets) without anyone remembering to add it.

- `api_operations(schema)`: the REST operations of an OpenAPI document.
- `minimal_body(schema, operation)`: the smallest JSON body the schema accepts (required fields
  only, from each field's `examples`, enum or type), so that what a test sees is about the
  caller (role, token), not a malformed body.
- `form_routes(app)`: the web UI's form posts, with their form fields.
- `page_routes(app)`: the web UI's pages (GET).
- `fill_path(path, ids)`: a path template with real ids put in.
- `listing_app()`: an app to read the routes from at collection time.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from serverctl.app import create_app
from serverctl.config import Settings

MUTATING = ("post", "put", "patch", "delete")
_PARAM = re.compile(r"\{([a-z_]+)(?::[a-z]+)?\}")


@dataclass(frozen=True)
class Operation:
    method: str  # lower case, as in OpenAPI
    path: str  # the template, e.g. /api/pools/{pool_id}
    spec: dict[str, Any]

    @property
    def mutating(self) -> bool:
        return self.method in MUTATING

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


def api_operations(schema: Mapping[str, Any], prefix: str = "/api/") -> list[Operation]:
    """The operator REST API's operations (the agents' own API left out: it has its own auth)."""
    return [
        Operation(method, path, spec)
        for path, methods in schema["paths"].items()
        if path.startswith(prefix) and not path.startswith("/api/agents/")
        for method, spec in methods.items()
    ]


def path_params(path: str) -> list[str]:
    return _PARAM.findall(path)


def fill_path(path: str, ids: Mapping[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in ids:
            raise KeyError(f"no id for path parameter {name!r} of {path}: add it to the test")
        return str(ids[name])

    return _PARAM.sub(value, path)


# -- bodies ---------------------------------------------------------------------------------------


def minimal_body(schema: Mapping[str, Any], operation: Operation) -> Any | None:
    """The smallest valid JSON body of `operation`, or None when it takes none (or it is
    optional)."""
    body = operation.spec.get("requestBody")
    if not body or not body.get("required"):
        return None
    media = body["content"].get("application/json")
    if media is None:
        return None
    return _value(schema, media["schema"])


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["components"]["schemas"][name]
    return node


def _value(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Any:
    node = _resolve(schema, node)
    if node.get("examples"):
        return node["examples"][0]
    if "default" in node:
        return node["default"]
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return node["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in node:
            choices = [c for c in node[key] if _resolve(schema, c).get("type") != "null"]
            return _value(schema, choices[0]) if choices else None
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties", {})
        # With nothing required, one field: an empty change is often refused as such.
        names = node.get("required") or list(properties)[:1]
        return {name: _value(schema, properties[name]) for name in names}
    if kind == "array":
        return [_value(schema, node["items"])] * node.get("minItems", 0)
    if kind == "integer":
        return max(1, node.get("minimum", 1))
    if kind == "number":
        return float(node.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "string":
        return "probe"[: node.get("maxLength", 5)].ljust(node.get("minLength", 0), "x")
    return None


# -- the web UI's forms ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FormRoute:
    path: str
    fields: dict[str, bool]  # form field name -> required

    def __str__(self) -> str:
        return f"POST {self.path}"


def form_routes(app: FastAPI) -> list[FormRoute]:
    """Every POST of the web UI (everything outside /api/), with its form fields."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path or ""
        if not isinstance(route, APIRoute) or path.startswith("/api/"):
            continue
        if "POST" not in (context.methods or ()):
            continue
        fields = {f.alias: f.field_info.is_required() for f in route.dependant.body_params}
        found.append(FormRoute(path, fields))
    return found


def page_routes(app: FastAPI) -> list[str]:
    """The web UI's GET routes (pages and their HTMX parts), as path templates."""
    found = []
    for context in iter_route_contexts(app.routes):
        module = getattr(context.endpoint, "__module__", "") or ""
        if module.startswith("serverctl.web") and "GET" in (context.methods or ()):
            found.append(context.path or "")
    return found


def listing_app() -> FastAPI:
    """The app, built only to list its routes (at test collection): no database is opened and
    the temporary data directory is gone once it is built."""
    with tempfile.TemporaryDirectory(prefix="sct-routes") as data_dir:
        settings = Settings(data_dir=Path(data_dir), secret_key=Fernet.generate_key().decode())
        return create_app(settings)

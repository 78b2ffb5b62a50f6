"""Settings → API providers: saved DNS provider credentials that pools link to.

The add form is built from each provider's `config_model`, so a new provider kind gets its form
without a template change; its `secret_fields` are password boxes, and secrets are never shown
again (nor echoed back into the form after an error)."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic.fields import FieldInfo

from serverctl.api.deps import State
from serverctl.api.schemas import Id
from serverctl.dns import registry
from serverctl.errors import ServerCTLError, ValidationError
from serverctl.web.auth import CurrentUser, FormUser, WebUser
from serverctl.web.common import redirect, render

router = APIRouter(include_in_schema=False)
PAGE = "/settings/providers"
PREFIX = "cfg_"  # form names of the provider settings, apart from name, kind and csrf_token
WORDS = {"api": "API", "id": "ID", "url": "URL", "tls": "TLS", "tsig": "TSIG", "ca": "CA"}


@dataclass(frozen=True)
class FieldSpec:
    """One input of the add form."""

    name: str
    label: str
    input: str  # text, password, number, checkbox, select, textarea
    required: bool
    default: Any
    help: str | None
    options: tuple[str, ...] = ()
    step: str = "1"


@dataclass(frozen=True)
class Kind:
    kind: str
    title: str
    available: bool
    reason: str | None = None


def _label(name: str) -> str:
    words = [WORDS.get(w, w) for w in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def _bare(annotation: Any) -> Any:
    """`X | None` -> X."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _input(name: str, info: FieldInfo, secret: bool) -> tuple[str, tuple[str, ...], str]:
    annotation = _bare(info.annotation)
    if get_origin(annotation) is Literal:
        return "select", tuple(str(a) for a in get_args(annotation)), "1"
    if annotation is bool:
        return "checkbox", (), "1"
    if annotation in (int, float):
        return "number", (), "1" if annotation is int else "any"
    if secret:
        return "password", (), "1"
    if "PEM" in (info.description or ""):
        return "textarea", (), "1"
    return "text", (), "1"


def field_specs(kind: str) -> list[FieldSpec]:
    cls = registry.provider_class(kind)
    specs = []
    for name, info in cls.config_model.model_fields.items():
        widget, options, step = _input(name, info, name in cls.secret_fields)
        required = info.is_required()
        specs.append(
            FieldSpec(
                name=name,
                label=_label(name),
                input=widget,
                required=required,
                default=None if required else info.default,
                help=info.description,
                options=options,
                step=step,
            )
        )
    return specs


def kinds() -> list[Kind]:
    found = []
    for kind in registry.kinds():
        try:
            found.append(Kind(kind, registry.provider_class(kind).title, True))
        except ValidationError as exc:
            found.append(Kind(kind, kind, False, exc.message))
    return found


def config_from_form(kind: str, form: dict[str, Any]) -> dict[str, Any]:
    """The provider settings in a submitted form: unticked boxes are false, empty boxes unset
    (so the provider's default applies, or its check names the missing key)."""
    config: dict[str, Any] = {}
    for spec in field_specs(kind):
        raw = form.get(PREFIX + spec.name)
        if spec.input == "checkbox":
            config[spec.name] = raw == "on"
        elif isinstance(raw, str) and raw.strip():
            config[spec.name] = raw.strip() if spec.input != "textarea" else raw
    return config


def _echo(kind: str, form: dict[str, Any]) -> dict[str, Any]:
    """What was typed, to fill the form again after an error: never the secrets."""
    try:
        secret = registry.provider_class(kind).secret_fields
    except ValidationError:
        return {}
    return {
        k.removeprefix(PREFIX): v
        for k, v in form.items()
        if k.startswith(PREFIX) and k.removeprefix(PREFIX) not in secret
    }


def _page(
    request: Request, state: State, user: WebUser, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    all_kinds = kinds()
    available = [k.kind for k in all_kinds if k.available]
    kind = extra.pop("kind", None)
    if kind not in available:
        kind = available[0] if available else None
    return render(
        request,
        "providers.html",
        user,
        status_code,
        providers=state.dns_accounts.list_all(user.principal),
        kinds=all_kinds,
        kind=kind,
        fields=field_specs(kind) if kind else [],
        values=extra.pop("values", {}),
        **extra,
    )


@router.get(PAGE)
def providers_page(
    request: Request,
    state: State,
    user: CurrentUser,
    kind: str | None = None,
    created: str | None = None,
    deleted: str | None = None,
) -> HTMLResponse:
    return _page(request, state, user, kind=kind, created=created, deleted=deleted)


@router.get(PAGE + "/fields")
def provider_fields(request: Request, user: CurrentUser, kind: str) -> HTMLResponse:
    """The add form's settings for one kind (swapped in when the kind changes)."""
    return render(
        request, "_provider_fields.html", user, kind=kind, fields=field_specs(kind), values={}
    )


async def _form(request: Request) -> dict[str, Any]:
    return dict((await request.form()).items())


@router.post(PAGE)
def create_provider(
    request: Request,
    state: State,
    user: FormUser,
    form: Annotated[dict[str, Any], Depends(_form)],
) -> Response:
    name, kind = str(form.get("name", "")), str(form.get("kind", ""))
    try:
        config = config_from_form(kind, form)
        created = state.dns_accounts.create(user.principal, name, kind, config)
    except ServerCTLError as exc:
        return _page(
            request,
            state,
            user,
            exc.status_code,
            error=exc.message,
            kind=kind if kind in registry.kinds() else None,
            values=_echo(kind, form),
            form_name=name,
        )
    return redirect(f"{PAGE}?created={quote(created['name'])}")


@router.post(PAGE + "/{provider_id}/test")
def test_provider(
    request: Request,
    provider_id: Id,
    state: State,
    user: FormUser,
    zone: Annotated[str, Form()] = "",
) -> Response:
    try:
        result = state.dns_accounts.test(user.principal, provider_id, zone.strip() or None)
        test = {"ok": result.ok, "detail": result.detail}
    except ServerCTLError as exc:
        test = {"ok": False, "detail": exc.message}
    if request.headers.get("hx-request"):
        return render(request, "_dns_test.html", user, test=test)
    return _page(request, state, user, tested=provider_id, test=test)


@router.post(PAGE + "/{provider_id}/delete")
def delete_provider(request: Request, provider_id: Id, state: State, user: FormUser) -> Response:
    try:
        name = state.dns_accounts.get(user.principal, provider_id)["name"]
        state.dns_accounts.delete(user.principal, provider_id)
    except ServerCTLError as exc:
        return _page(request, state, user, exc.status_code, error=exc.message)
    state.publisher.forget_provider(provider_id)
    return redirect(f"{PAGE}?deleted={quote(name)}")

"""Settings → Backups: where snapshots are kept (the local directory or S3), and the connectivity
test. Admins change it; everyone else sees it read-only.

The form is built from the store kinds' own fields (`BackupStores.view()["kinds"]`), so a store
added by an entry point gets its form without a template change. Secrets are password boxes,
never filled in nor echoed back after an error: an empty box keeps the stored secret."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from serverctl.api.deps import State
from serverctl.errors import ServerCTLError, ValidationError
from serverctl.state import AppState
from serverctl.web.auth import CurrentUser, FormUser, WebUser
from serverctl.web.common import redirect, render

router = APIRouter(include_in_schema=False)
PAGE = "/settings/backup-store"
SETTING, SECRET = "cfg_", "secret_"  # form name prefixes
WORDS = {"id": "ID", "url": "URL", "s3": "S3"}


def label(name: str) -> str:
    """`endpoint_url` -> "Endpoint URL"."""
    words = [WORDS.get(w, w) for w in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def _kind(view: dict[str, Any], kind: str | None) -> dict[str, Any] | None:
    """The kind's entry in view["kinds"] ({kind, title, settings: [...], secrets: [...]}), its
    fields labelled for the form."""
    kinds: list[dict[str, Any]] = view.get("kinds") or []
    wanted = kind or view.get("kind")
    found = next((k for k in kinds if k["kind"] == wanted), kinds[0] if kinds else None)
    if found is None:
        return None
    return {
        **found,
        "settings": [{**f, "label": label(f["name"])} for f in found.get("settings", [])],
        "secrets": [{**f, "label": label(f["name"])} for f in found.get("secrets", [])],
    }


def _values(view: dict[str, Any], kind: dict[str, Any] | None) -> dict[str, Any]:
    """What the settings boxes show: the saved settings for the saved kind, else the defaults."""
    if kind is None:
        return {}
    saved = (view.get("settings") or {}) if kind["kind"] == view.get("kind") else {}
    return {
        f["name"]: saved.get(f["name"], f.get("default"))
        for f in kind.get("settings", [])
        if saved.get(f["name"], f.get("default")) is not None
    }


def _page(
    request: Request,
    state: AppState,
    user: WebUser,
    status_code: int = 200,
    kind: str | None = None,
    values: dict[str, Any] | None = None,
    **extra: Any,
) -> HTMLResponse:
    view = state.backup_stores.view(user.principal)
    chosen = _kind(view, kind)
    return render(
        request,
        "settings_backup_store.html",
        user,
        status_code,
        store=view,
        chosen=chosen,
        values=values if values is not None else _values(view, chosen),
        **extra,
    )


@router.get(PAGE)
def store_page(
    request: Request, state: State, user: CurrentUser, saved: int = 0, kind: str | None = None
) -> HTMLResponse:
    return _page(request, state, user, kind=kind, saved=bool(saved))


@router.get(PAGE + "/fields")
def store_fields(request: Request, state: State, user: CurrentUser, kind: str) -> HTMLResponse:
    """The form's fields for one kind (swapped in when the kind changes)."""
    view = state.backup_stores.view(user.principal)
    chosen = _kind(view, kind)
    return render(
        request,
        "_backup_store_fields.html",
        user,
        store=view,
        chosen=chosen,
        values=_values(view, chosen),
    )


async def _form(request: Request) -> dict[str, Any]:
    return dict((await request.form()).items())


def split_form(kind: dict[str, Any], form: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(settings, secrets) from a submitted form: empty setting boxes are left out (the store's
    default applies, or its check names the missing field); empty secret boxes too (the stored
    secret is kept)."""
    settings: dict[str, Any] = {}
    for field in kind.get("settings", []):
        raw = form.get(SETTING + field["name"])
        if isinstance(raw, str) and raw.strip():
            settings[field["name"]] = raw.strip()
    secrets: dict[str, str] = {}
    for field in kind.get("secrets", []):
        raw = form.get(SECRET + field["name"])
        if isinstance(raw, str) and raw:
            secrets[field["name"]] = raw
    return settings, secrets


@router.post(PAGE)
def save_store(
    request: Request,
    state: State,
    user: FormUser,
    form: Annotated[dict[str, Any], Depends(_form)],
) -> Response:
    kind_name = str(form.get("kind", ""))
    settings: dict[str, Any] = {}
    try:
        kind = _kind(state.backup_stores.view(user.principal), kind_name)
        if kind is None or kind["kind"] != kind_name:
            raise ValidationError(f"choose a backup store kind from the list, not {kind_name!r}")
        settings, secrets = split_form(kind, form)
        state.backup_stores.put(user.principal, kind_name, settings, secrets)
    except ServerCTLError as exc:
        # Echo what was typed (never the secrets) so the admin corrects rather than retypes.
        return _page(
            request,
            state,
            user,
            exc.status_code,
            kind=kind_name or None,
            values=settings
            or {
                k.removeprefix(SETTING): v
                for k, v in form.items()
                if k.startswith(SETTING) and isinstance(v, str)
            },
            error=exc.message,
        )
    return redirect(f"{PAGE}?saved=1")


@router.post(PAGE + "/test")
def test_store(request: Request, state: State, user: FormUser) -> Response:
    """The store's connectivity test; HTMX gets just the result line, a plain post the page."""
    try:
        result = state.backup_stores.test(user.principal)
        test = {"ok": True, "detail": str(result.get("detail") or "the store answered")}
    except ServerCTLError as exc:
        test = {"ok": False, "detail": exc.message}
    if request.headers.get("hx-request"):
        return render(request, "_backup_store_test.html", user, test=test)
    return _page(request, state, user, test=test)

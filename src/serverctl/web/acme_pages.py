"""Settings → TLS: the ACME settings (which CA issues the pools' certificates, the account's
contact, a CA bundle for a private ACME server, the DNS servers that must show a challenge) and
whether an account is registered. Admins change them; everyone else sees them read-only.

The service (serverctl.acme.settings) validates, audits and keeps the account key; this page
only turns the form into its arguments. The account key is never on the page: only whether an
account is registered and its URL at the CA.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from serverctl.acme.settings import LETS_ENCRYPT, LETS_ENCRYPT_STAGING
from serverctl.api.deps import State
from serverctl.errors import ServerCTLError
from serverctl.web.auth import CurrentUser, FormUser, WebUser
from serverctl.web.common import redirect, render

router = APIRouter(include_in_schema=False)
PAGE = "/settings/tls"
CUSTOM = "custom"
# The radio choices: Let's Encrypt's two documented directories, or any ACME server's URL.
DIRECTORIES: dict[str, str] = {"production": LETS_ENCRYPT, "staging": LETS_ENCRYPT_STAGING}


def directory_choice(url: str) -> str:
    """Which radio a saved URL selects: a Let's Encrypt directory by name, else custom."""
    return next((name for name, known in DIRECTORIES.items() if known == url), CUSTOM)


def _form_of(settings: dict[str, Any]) -> dict[str, str]:
    """The form's values from the saved settings (production preselected when there are none)."""
    url = settings.get("directory_url") or ""
    choice = directory_choice(url) if url else "production"
    return {
        "directory": choice,
        "directory_url": url if choice == CUSTOM else "",
        "email": settings.get("email") or "",
        "ca_bundle": settings.get("ca_bundle") or "",
        "check_servers": "\n".join(settings.get("check_servers") or []),
    }


def _page(
    request: Request,
    state: State,
    user: WebUser,
    status_code: int = 200,
    form: dict[str, str] | None = None,
    **extra: Any,
) -> HTMLResponse:
    acme = state.acme_settings.get(user.principal)
    return render(
        request,
        "settings_acme.html",
        user,
        status_code,
        acme=acme,
        saved_choice=directory_choice(acme["directory_url"]) if acme["configured"] else None,
        form=form if form is not None else _form_of(acme),
        directories=DIRECTORIES,
        **extra,
    )


@router.get(PAGE)
def acme_page(request: Request, state: State, user: CurrentUser, saved: int = 0) -> HTMLResponse:
    return _page(request, state, user, saved=bool(saved))


async def _form(request: Request) -> dict[str, str]:
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


def directory_url(form: dict[str, str]) -> str:
    """The URL the form chose: a Let's Encrypt directory by name, else the typed one (which the
    service checks; an unknown choice counts as custom, so nothing is silently replaced)."""
    return DIRECTORIES.get(form.get("directory", ""), form.get("directory_url", ""))


def check_servers(text: str) -> list[str]:
    """One server per line (commas and spaces separate too, as people paste them)."""
    return [part for part in text.replace(",", " ").split() if part]


@router.post(PAGE)
def save_acme(
    request: Request,
    state: State,
    user: FormUser,
    form: Annotated[dict[str, str], Depends(_form)],
) -> Response:
    typed = {
        "directory": form.get("directory", CUSTOM),
        "directory_url": form.get("directory_url", "").strip(),
        "email": form.get("email", "").strip(),
        "ca_bundle": form.get("ca_bundle", ""),
        "check_servers": form.get("check_servers", ""),
    }
    try:
        # The role first: a viewer's post is refused (403) whatever it holds, never judged.
        user.principal.require("admin")
        state.acme_settings.set(
            user.principal,
            directory_url=directory_url(typed),
            email=typed["email"],
            ca_bundle=typed["ca_bundle"] or None,
            check_servers=check_servers(typed["check_servers"]),
        )
    except ServerCTLError as exc:
        # An admin's typing comes back as typed, to correct rather than retype; anyone else
        # sees the saved values again (what they typed was never theirs to change).
        admin = user.principal.can("admin")
        return _page(
            request,
            state,
            user,
            exc.status_code,
            form=typed if admin else None,
            error=exc.message,
        )
    return redirect(f"{PAGE}?saved=1")

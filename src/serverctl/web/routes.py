"""Web UI routes. Pages call the same rules as the REST API; errors are shown on the page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from serverctl.agent_dist import install_command
from serverctl.api.deps import SourceIP, State
from serverctl.api.errors import json_error
from serverctl.api.schemas import Id
from serverctl.errors import AuthError, ServerCTLError, TooManyLogins
from serverctl.web import (
    acme_pages,
    backup_pages,
    backup_store_pages,
    dns_pages,
    dr_pages,
    member_tabs,
    overview,
    pool_settings,
    providers,
)
from serverctl.web.auth import (
    COOKIE,
    CsrfFailed,
    CurrentUser,
    FormUser,
    LoginRequired,
    WebUser,
    login_url,
    safe_next,
)
from serverctl.web.common import HERE, base_url, member_context, redirect, render

router = APIRouter(include_in_schema=False)


# -- login ----------------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", None, next=safe_next(next))


@router.post("/login")
def login(
    request: Request,
    state: State,
    ip: SourceIP,
    name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str | None, Form()] = None,
) -> Response:
    try:
        login = state.operators.login(name, password, ip)
    except (AuthError, TooManyLogins) as exc:
        page = render(
            request,
            "login.html",
            None,
            exc.status_code,
            error=exc.message,
            next=safe_next(next),
            name=name,
        )
        if isinstance(exc, TooManyLogins):
            page.headers["Retry-After"] = str(exc.retry_after)
        return page
    response = redirect(safe_next(next))
    response.set_cookie(
        COOKIE,
        login.session_id,
        max_age=state.settings.session_max_age_s,
        httponly=True,
        samesite="lax",
        secure=state.settings.cookie_secure,
        path="/",
    )
    return response


@router.post("/logout")
def logout(state: State, user: FormUser) -> Response:
    state.operators.logout(user.session_id, user.principal)
    response = redirect("/login")
    response.delete_cookie(COOKIE, path="/")
    return response


# -- pools ----------------------------------------------------------------------------------------


@router.get("/")
def home() -> Response:
    return redirect("/pools")


@router.get("/pools")
def pools_page(request: Request, state: State, user: CurrentUser) -> HTMLResponse:
    return render(request, "pools.html", user, pools=state.pools.list_pools(user.principal))


@router.post("/pools")
def create_pool(
    request: Request,
    state: State,
    user: FormUser,
    name: Annotated[str, Form()],
    template: Annotated[str, Form()] = "haproxy",
) -> Response:
    try:
        pool = state.pools.create_pool(user.principal, name.strip(), template)
    except ServerCTLError as exc:
        return render(
            request,
            "pools.html",
            user,
            exc.status_code,
            error=exc.message,
            pools=state.pools.list_pools(user.principal),
            form_name=name,
            form_template=template,
        )
    return redirect(f"/pools/{pool['id']}?created=1")


@router.get("/pools/{pool_id}/members/{member_id}")
def member_page(
    request: Request, pool_id: Id, member_id: Id, state: State, user: CurrentUser
) -> HTMLResponse:
    return render(request, "member.html", user, **_member_context(state, user, pool_id, member_id))


@router.get("/pools/{pool_id}/members/{member_id}/live")
def member_live(
    request: Request, pool_id: Id, member_id: Id, state: State, user: CurrentUser
) -> HTMLResponse:
    return render(
        request,
        "_member_live.html",
        user,
        oob=True,
        **_member_context(state, user, pool_id, member_id),
    )


def _member_context(state: State, user: WebUser, pool_id: int, member_id: int) -> dict[str, Any]:
    context = member_context(state, user, pool_id, member_id, "health")
    context["rejections"] = state.pools.rejections(user.principal, pool_id, member_id, limit=20)
    return context


@router.post("/pools/{pool_id}/members/{member_id}/rotate-secret")
def rotate_secret(
    request: Request, pool_id: Id, member_id: Id, state: State, user: FormUser
) -> HTMLResponse:
    rotated = state.pools.rotate_secret(user.principal, pool_id, member_id)
    command = install_command(base_url(state, request), rotated.secret, rotated.member["hostname"])
    return render(
        request,
        "member.html",
        user,
        install=command,
        **_member_context(state, user, pool_id, member_id),
    )


@router.post("/pools/{pool_id}/members/{member_id}/delete")
def delete_member(pool_id: Id, member_id: Id, state: State, user: FormUser) -> Response:
    state.pools.delete_member(user.principal, pool_id, member_id)
    return redirect(f"/pools/{pool_id}")


# -- administration -------------------------------------------------------------------------------


def _admin(
    request: Request, state: State, user: WebUser, status: int = 200, **extra: Any
) -> HTMLResponse:
    """The users-and-tokens page, with whatever the action wants to show on it."""
    return render(
        request,
        "admin.html",
        user,
        status,
        users=state.operators.list_users(user.principal),
        tokens=state.operators.list_tokens(user.principal),
        **extra,
    )


@router.get("/admin")
def admin_page(request: Request, state: State, user: CurrentUser) -> HTMLResponse:
    return _admin(request, state, user)


@router.post("/admin/users")
def admin_create_user(
    request: Request,
    state: State,
    user: FormUser,
    name: Annotated[str, Form()],
    role: Annotated[str, Form()],
) -> HTMLResponse:
    try:
        created, password = state.operators.create_user(user.principal, name.strip(), role)
    except ServerCTLError as exc:
        return _admin(request, state, user, exc.status_code, error=exc.message)
    return _admin(
        request, state, user, 201, shown_once=(f"password for {created['name']}", password)
    )


@router.post("/admin/users/{user_id}/delete")
def admin_delete_user(request: Request, user_id: Id, state: State, user: FormUser) -> Response:
    try:
        state.operators.delete_user(user.principal, user_id)
    except ServerCTLError as exc:
        return _admin(request, state, user, exc.status_code, error=exc.message)
    return redirect("/admin")


@router.post("/admin/tokens")
def admin_create_token(
    request: Request,
    state: State,
    user: FormUser,
    name: Annotated[str, Form()],
    role: Annotated[str, Form()],
) -> HTMLResponse:
    try:
        created, token = state.operators.create_token(user.principal, name, role)
    except ServerCTLError as exc:
        return _admin(request, state, user, exc.status_code, error=exc.message)
    return _admin(request, state, user, 201, shown_once=(f"API token {created['name']}", token))


@router.post("/admin/tokens/{token_id}/revoke")
def admin_revoke_token(token_id: Id, state: State, user: FormUser) -> Response:
    state.operators.revoke_token(user.principal, token_id)
    return redirect("/admin")


@router.get("/admin/audit")
def audit_page(request: Request, state: State, user: CurrentUser, page: int = 1) -> HTMLResponse:
    page = max(1, page)
    entries, total = state.operators.audit_log(user.principal, 100, (page - 1) * 100)
    return render(request, "audit.html", user, entries=entries, total=total, page=page)


# -- wiring ---------------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(router)
    app.include_router(overview.router)
    app.include_router(pool_settings.router)
    app.include_router(dns_pages.router)
    app.include_router(providers.router)
    app.include_router(member_tabs.router)
    app.include_router(backup_pages.router)
    app.include_router(dr_pages.router)
    app.include_router(backup_store_pages.router)
    app.include_router(acme_pages.router)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("hx-request"):
            # An HTMX poll after the session ended: send the whole page to the login form.
            return Response(status_code=204, headers={"HX-Redirect": login_url(exc.next_url)})
        return redirect(login_url(exc.next_url))

    @app.exception_handler(CsrfFailed)
    async def _csrf(request: Request, exc: CsrfFailed) -> Response:
        return HTMLResponse(
            "<h1>403</h1><p>The form's CSRF token is missing or stale: reload "
            "the page and try again.</p>",
            status_code=403,
        )

    @app.exception_handler(ServerCTLError)
    async def _errors(request: Request, exc: ServerCTLError) -> Response:
        if request.url.path.startswith(("/api/", "/agent/", "/metrics")):
            return json_error(exc)
        return render(request, "error.html", None, exc.status_code, message=exc.message)

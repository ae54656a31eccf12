"""The reviewers' HTTP app: server-rendered pages and a JSON API over the same service.

``create_app(settings, engine)`` builds it; ``unmask review`` serves it with uvicorn. Every route
needs a signed-in reviewer except ``/healthz``, ``/metrics`` and the sign-in form itself. State
changes need the session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``).
Pages carry a per-request CSP nonce; images come only from the pipeline's content-addressed
store, with their type taken from the decoded picture, never from the account's URL.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from starlette.middleware.sessions import SessionMiddleware

from pipeline import metrics
from pipeline.review import audit, auth
from pipeline.review import queue as q
from pipeline.review.detail import load_detail
from pipeline.review.model import (
    AVATAR_LABELS,
    ESCALATED_QUEUE,
    PHOTO_LABELS,
    ROLE_RANK,
    Forbidden,
    Reviewer,
    ReviewError,
)
from pipeline.review.service import ReviewService
from pipeline.review.views import age_words, local_time
from pipeline.settings import Settings
from pipeline.store.images import ImageStore, is_sha256

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/login"})
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
                 "GIF": "image/gif"}
IMAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
PLACEHOLDER_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 120 120" width="120" height="120">'
    b'<rect width="120" height="120" fill="#e5e7eb"/><circle cx="60" cy="46" r="20" '
    b'fill="#9ca3af"/><rect x="26" y="74" width="68" height="34" rx="17" fill="#9ca3af"/>'
    b'<text x="60" y="116" font-size="9" text-anchor="middle" fill="#4b5563">not stored</text>'
    b'</svg>'
)


class LoginRequired(Exception):
    """Raised by the auth dependency; answered with 401 (API, images) or a redirect (pages)."""


class CsrfRefused(Exception):
    """A state-changing request without the session's CSRF token."""


class DecideBody(BaseModel):
    outcome: str = Field(pattern="^(disable|clear|escalate)$")
    note: str | None = Field(default=None, max_length=2000)
    avatar_label: str | None = None
    photo_label: str | None = None


class NoteBody(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


class BulkBody(BaseModel):
    outcome: str = Field(pattern="^(disable|clear)$")
    note: str | None = Field(default=None, max_length=2000)


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path.startswith("/images/")


def refresh_queue_metrics(engine: Engine) -> list[q.QueueStats]:
    now = datetime.now(UTC)
    with engine.connect() as conn:
        stats = q.queue_stats(conn, now)
    for s in stats:
        metrics.REVIEW_QUEUE_DEPTH.labels(s.queue).set(s.depth)
        metrics.REVIEW_OLDEST_AGE.labels(s.queue).set(s.oldest_age_s(now))
    return stats


def create_app(settings: Settings, engine: Engine,
               on_decision: Callable[[], None] | None = None,
               lifespan_hooks: tuple[Callable[[], None], Callable[[], None]] | None = None
               ) -> FastAPI:
    """The review app over ``engine``. ``on_decision`` is called after each committed decision
    (the outbox publisher's wake-up); ``lifespan_hooks`` are (start, stop) run with the server."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if lifespan_hooks:
            lifespan_hooks[0]()
        try:
            yield
        finally:
            if lifespan_hooks:
                lifespan_hooks[1]()

    app = FastAPI(title="unmask review", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    service = ReviewService(engine, settings)
    images = ImageStore(settings.review.image_dir)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["age"] = age_words
    formats: dict[str, str | None] = {}
    throttle = auth.LoginThrottle()
    notify = on_decision or (lambda: None)

    @app.middleware("http")
    async def security_headers(request: Request,
                               call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        nonce = secrets.token_urlsafe(16)
        request.state.nonce = nonce
        response = await call_next(request)
        h = response.headers
        h.setdefault("Content-Security-Policy",
                     f"default-src 'none'; img-src 'self'; style-src 'nonce-{nonce}'; "
                     f"script-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; "
                     "base-uri 'none'; connect-src 'self'")
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("Cache-Control", "no-store")
        h.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        return response

    app.add_middleware(
        SessionMiddleware, secret_key=settings.secret_key.get_secret_value(),
        session_cookie="unmask_review", max_age=settings.review.session_max_age_s,
        same_site="strict", https_only=settings.review.secure_cookies,
    )

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _exc: LoginRequired) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": "sign-in required"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(CsrfRefused)
    async def _csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        return JSONResponse({"error": "CSRF token missing or wrong"}, status_code=403)

    @app.exception_handler(ReviewError)
    async def _review_error(request: Request, exc: ReviewError) -> Response:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    def current_reviewer(request: Request) -> Reviewer:
        rid = request.session.get("rid")
        if not isinstance(rid, int):
            raise LoginRequired()
        with engine.connect() as conn:
            reviewer = auth.load_reviewer(conn, rid)
        if reviewer is None:
            request.session.clear()
            raise LoginRequired()
        return reviewer

    async def csrf_protect(request: Request) -> None:
        expected = request.session.get("csrf")
        given = request.headers.get("x-csrf-token")
        if given is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get("csrf_token")
            given = value if isinstance(value, str) else None
        if not auth.csrf_matches(expected if isinstance(expected, str) else None, given):
            raise CsrfRefused()

    def csrf_token(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = auth.new_csrf_token()
            request.session["csrf"] = token
        return token

    def flash(request: Request, message: str, kind: str = "info") -> None:
        request.session.setdefault("flash", []).append([kind, message])

    def render(request: Request, name: str, reviewer: Reviewer | None, status: int = 200,
               **context: Any) -> HTMLResponse:
        flashes = request.session.pop("flash", [])
        zone = reviewer.time_zone if reviewer else "UTC"
        return templates.TemplateResponse(request, name, {
            "reviewer": reviewer, "csrf_token": csrf_token(request),
            "nonce": request.state.nonce, "flashes": flashes,
            "t": lambda v: local_time(v, zone), "zone": zone,
            "escalated_queue": ESCALATED_QUEUE, **context,
        }, status_code=status)

    Authed = Depends(current_reviewer)
    Csrf = Depends(csrf_protect)

    # Public ------------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            return JSONResponse({"status": "database unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        try:
            refresh_queue_metrics(engine)
        except sa.exc.SQLAlchemyError:
            log.warning("queue metrics not refreshed: database unavailable")
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return render(request, "login.html", None, next=_safe_next(next), error=None)

    @app.post("/login", dependencies=[Csrf])
    async def login(request: Request) -> Response:
        form = await request.form()
        username = str(form.get("username") or "")[:64]
        password = str(form.get("password") or "")
        target = _safe_next(str(form.get("next") or "/"))
        if throttle.blocked(username):
            with engine.begin() as conn:
                audit.record(conn, username or "-", "login_throttled",
                             subject=f"reviewer:{username}")
            return render(request, "login.html", None, status=429, next=target,
                          error="Too many failed attempts. Wait a few minutes.")
        reviewer = auth.authenticate(engine, username, password)
        throttle.record(username, ok=reviewer is not None)
        with engine.begin() as conn:
            audit.record(conn, reviewer or username or "-",
                         "login" if reviewer else "login_failed",
                         subject=f"reviewer:{username}")
        if reviewer is None:
            return render(request, "login.html", None, status=401, next=target,
                          error="Wrong user name or password.")
        request.session.clear()
        request.session["rid"] = reviewer.id
        request.session["csrf"] = auth.new_csrf_token()
        return RedirectResponse(target, status_code=303)

    # Pages ---------------------------------------------------------------------------------
    @app.post("/logout", dependencies=[Csrf])
    def logout(request: Request, reviewer: Reviewer = Authed) -> Response:
        with engine.begin() as conn:
            audit.record(conn, reviewer, "logout")
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def queues_page(request: Request, reviewer: Reviewer = Authed) -> HTMLResponse:
        now = datetime.now(UTC)
        stats = refresh_queue_metrics(engine)
        visible = [s for s in stats if s.queue != ESCALATED_QUEUE
                   or reviewer.rank >= ROLE_RANK["lead"]]
        with engine.connect() as conn:
            claims = q.my_claims(conn, reviewer, now)
        return render(request, "queues.html", reviewer, queues=visible, now=now, claims=claims,
                      last_queue=request.session.get("last_queue"))

    @app.post("/queues/{queue}/claim", dependencies=[Csrf])
    def claim_page(request: Request, queue: str, reviewer: Reviewer = Authed) -> Response:
        try:
            item_id = _timed_claim(service, reviewer, queue)
        except ReviewError as exc:
            flash(request, exc.message, "error")
            return RedirectResponse("/", status_code=303)
        request.session["last_queue"] = queue
        if item_id is None:
            flash(request, f"Queue {queue} is empty. Nothing to claim.", "info")
            return RedirectResponse("/", status_code=303)
        return RedirectResponse(f"/items/{item_id}", status_code=303)

    @app.get("/items/{item_id}", response_class=HTMLResponse)
    def item_page(request: Request, item_id: int, reviewer: Reviewer = Authed) -> HTMLResponse:
        try:
            with engine.connect() as conn:
                detail = load_detail(conn, item_id, reviewer)
        except ReviewError as exc:
            return render(request, "error.html", reviewer, status=exc.status,
                          message=exc.message)
        now = datetime.now(UTC)
        age_s = (now - q.aware(detail["item"]["created_at"])).total_seconds()
        return render(request, "item.html", reviewer, d=detail, now=now, age_s=age_s,
                      avatar_labels=AVATAR_LABELS, photo_labels=PHOTO_LABELS,
                      is_lead=reviewer.rank >= ROLE_RANK["lead"])

    @app.post("/items/{item_id}/decide", dependencies=[Csrf])
    async def decide_page(request: Request, item_id: int,
                          reviewer: Reviewer = Authed) -> Response:
        form = await request.form()
        outcome = str(form.get("outcome") or "")
        try:
            result = service.decide(
                reviewer, item_id, outcome, str(form.get("note") or ""),
                _opt(form.get("avatar_label")), _opt(form.get("photo_label")))
        except (ReviewError, ValueError) as exc:
            flash(request, getattr(exc, "message", str(exc)), "error")
            return RedirectResponse(f"/items/{item_id}", status_code=303)
        notify()
        verb = {"disable": "Disabled", "clear": "Cleared", "escalate": "Escalated"}[outcome]
        count = len(result.decision_ids)
        flash(request, f"{verb} item {item_id}" + (f" ({count} accounts)" if count > 1 else "")
              + ".", "ok")
        return RedirectResponse("/", status_code=303)

    @app.post("/items/{item_id}/release", dependencies=[Csrf])
    def release_page(request: Request, item_id: int, reviewer: Reviewer = Authed) -> Response:
        try:
            service.release(reviewer, item_id)
            flash(request, f"Released item {item_id} back to its queue.", "info")
        except ReviewError as exc:
            flash(request, exc.message, "error")
        return RedirectResponse("/", status_code=303)

    @app.post("/clusters/{cluster_id}/decide", dependencies=[Csrf])
    async def bulk_page(request: Request, cluster_id: str,
                        reviewer: Reviewer = Authed) -> Response:
        form = await request.form()
        try:
            result = service.decide_cluster(reviewer, cluster_id, str(form.get("outcome") or ""),
                                            str(form.get("note") or ""))
        except (ReviewError, ValueError) as exc:
            flash(request, getattr(exc, "message", str(exc)), "error")
            return RedirectResponse("/", status_code=303)
        notify()
        flash(request, f"Decided cluster {cluster_id}: {len(result.decision_ids)} accounts.",
              "ok")
        return RedirectResponse("/", status_code=303)

    @app.get("/history", response_class=HTMLResponse)
    def history_page(request: Request, mine: bool = False, before_id: int | None = None,
                     reviewer: Reviewer = Authed) -> HTMLResponse:
        actor = reviewer.username if (mine or reviewer.rank < ROLE_RANK["lead"]) else None
        with engine.connect() as conn:
            rows = audit.history(conn, actor=actor, before_id=before_id, limit=100)
        return render(request, "history.html", reviewer, rows=rows, mine=actor is not None)

    @app.get("/images/{sha256}")
    def image(sha256: str, reviewer: Reviewer = Authed) -> Response:
        if not is_sha256(sha256):
            return PlainTextResponse("bad image key", status_code=404)
        data = images.get(sha256)
        fmt = formats.get(sha256) if data is not None else None
        if data is not None and sha256 not in formats:
            if len(formats) >= 50_000:
                formats.clear()
            fmt = formats[sha256] = _decoded_format(data, settings.avatars.max_pixels)
        headers = {"Content-Security-Policy": IMAGE_CSP, "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "private, max-age=3600",
                   "Cross-Origin-Resource-Policy": "same-origin"}
        if data is None or fmt is None:
            headers["X-Unmask-Placeholder"] = "missing" if data is None else "undecodable"
            return Response(PLACEHOLDER_SVG, media_type="image/svg+xml", headers=headers)
        headers["Content-Disposition"] = f'inline; filename="{sha256[:16]}"'
        return Response(data, media_type=CONTENT_TYPES[fmt], headers=headers)

    # JSON API --------------------------------------------------------------------------------
    @app.get("/api/me")
    def api_me(request: Request, reviewer: Reviewer = Authed) -> dict[str, Any]:
        return {"username": reviewer.username, "role": reviewer.role,
                "time_zone": reviewer.time_zone, "csrf_token": csrf_token(request)}

    @app.get("/api/queues")
    def api_queues(reviewer: Reviewer = Authed) -> dict[str, Any]:
        now = datetime.now(UTC)
        stats = refresh_queue_metrics(engine)
        return {"queues": [
            {"queue": s.queue, "depth": s.depth, "in_review": s.in_review,
             "oldest_created_at": s.oldest_created_at, "oldest_age_s": s.oldest_age_s(now)}
            for s in stats
            if s.queue != ESCALATED_QUEUE or reviewer.rank >= ROLE_RANK["lead"]
        ]}

    @app.post("/api/queues/{queue}/claim", dependencies=[Csrf])
    def api_claim(queue: str, reviewer: Reviewer = Authed) -> Response:
        item_id = _timed_claim(service, reviewer, queue)
        if item_id is None:
            return JSONResponse({"item": None, "message": "queue empty"}, status_code=200)
        with engine.connect() as conn:
            detail = load_detail(conn, item_id, reviewer)
        return JSONResponse(jsonable_encoder({"item": detail}))

    @app.get("/api/items/{item_id}")
    def api_item(item_id: int, reviewer: Reviewer = Authed) -> Response:
        with engine.connect() as conn:
            detail = load_detail(conn, item_id, reviewer)
        return JSONResponse(jsonable_encoder(detail))

    @app.post("/api/items/{item_id}/decide", dependencies=[Csrf])
    def api_decide(item_id: int, body: DecideBody, reviewer: Reviewer = Authed) -> Response:
        try:
            result = service.decide(reviewer, item_id, body.outcome, body.note,
                                    body.avatar_label, body.photo_label)
        except ValueError as exc:
            raise ReviewError(str(exc)) from exc
        notify()
        return JSONResponse(jsonable_encoder(result))

    @app.post("/api/items/{item_id}/release", dependencies=[Csrf])
    def api_release(item_id: int, reviewer: Reviewer = Authed) -> dict[str, Any]:
        service.release(reviewer, item_id)
        return {"item_id": item_id, "status": "released"}

    @app.post("/api/items/{item_id}/escalate", dependencies=[Csrf])
    def api_escalate(item_id: int, body: NoteBody, reviewer: Reviewer = Authed
                     ) -> dict[str, Any]:
        service.escalate(reviewer, item_id, body.note)
        return {"item_id": item_id, "status": "escalated"}

    @app.post("/api/clusters/{cluster_id}/decide", dependencies=[Csrf])
    def api_bulk(cluster_id: str, body: BulkBody, reviewer: Reviewer = Authed) -> Response:
        result = service.decide_cluster(reviewer, cluster_id, body.outcome, body.note)
        notify()
        return JSONResponse(jsonable_encoder(result))

    @app.get("/api/history")
    def api_history(actor: str | None = None, item_id: int | None = None,
                    before_id: int | None = None, limit: int = 100,
                    reviewer: Reviewer = Authed) -> Response:
        if reviewer.rank < ROLE_RANK["lead"]:
            if actor not in (None, reviewer.username) and item_id is None:
                raise Forbidden("reviewers see their own history")
            if item_id is None:
                actor = reviewer.username
        with engine.connect() as conn:
            rows = audit.history(conn, actor=actor, item_id=item_id, before_id=before_id,
                                 limit=max(1, min(limit, 500)))
        return JSONResponse(jsonable_encoder({"history": [dict(r) for r in rows]}))

    return app


def _timed_claim(service: ReviewService, reviewer: Reviewer, queue: str) -> int | None:
    with metrics.REVIEW_CLAIM_SECONDS.time():
        return service.claim(reviewer, queue)


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _safe_next(target: str) -> str:
    """Only same-site paths: no scheme, no host, no protocol-relative ``//``."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _decoded_format(data: bytes, max_pixels: int) -> str | None:
    """The format the hardened decoder finds in ``data`` (None when it refuses)."""
    from pipeline.avatars.decode import decode_image
    from pipeline.avatars.errors import AvatarRefused

    try:
        decoded = decode_image(data, max_pixels=max_pixels)
    except (AvatarRefused, ValueError, OSError):
        return None
    return decoded.format if decoded.format in CONTENT_TYPES else None

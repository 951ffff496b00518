"""The reviewer page: the queue of borderline verify jobs, each case, and the decision.

Server-rendered HTML with no script and no asset from elsewhere; the decision is a plain form
POST. A browser logs in once with its API key (a key with the ``review`` scope): the answer sets
an HttpOnly, SameSite=Strict session cookie, kept in Redis by its hash with the key's id and a
CSRF token that every form carries back. The login form itself carries a token that must match
a cookie set with the form (so another site cannot log a browser in under its own key: login
CSRF), and every form POST from another origin is refused. Images are served only to such a
session, never cached.

The crops are cut on demand (``api_stub/crops.py``) from the stored images and the landmarks the
job's result already holds (the same similarity warp the engine aligns with): the stub loads no
model, and nothing made here outlives the response (the images live only as long as the job).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from api_stub.auth import KeyRing, Principal
from shared import keys
from shared.config import Settings
from shared.errors import JobError, KYCFaceError
from shared.events import review as queue
from shared.jobs.model import JOB_ID_PATTERN, JobDocument
from shared.producer import Producer
from shared.tenants import Scope, scoped

log = logging.getLogger(__name__)

COOKIE = "kyc_review"
LOGIN_COOKIE = "kyc_review_login"  # the login form's token, double-submitted
LOGIN_FORM_TTL_S = 3600
ROLES = ("selfie", "document")
DISPLAY_PX = 720  # longest side of an image on the page
CROP_PX = 224  # the 112 px aligned crop, shown at twice its size
MAX_FORM_FIELDS = 8

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]
_NO_STORE = {"Cache-Control": "no-store, private", "X-Content-Type-Options": "nosniff"}
_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"

_STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em;color:#222}
header{display:flex;justify-content:space-between;align-items:center;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%}td,th{padding:.3em .6em;border-bottom:1px solid #eee;text-align:left}
.pair{display:flex;gap:1em;flex-wrap:wrap}.pair figure{margin:0}.pair img{max-width:520px;border:1px solid #ccc}
.crops img{width:224px;height:224px;image-rendering:auto}
.facts td:first-child{color:#555}.low{color:#b00;font-weight:bold}.ok{color:#070}
form.decide{margin-top:1em;padding:1em;background:#f6f6f6}textarea{width:100%;height:4em}
button{font-size:1em;padding:.4em 1.2em;margin-right:.5em}
"""


@dataclass(frozen=True)
class Session:
    """A logged-in reviewer: the key's principal (its tenant bounds every case) and the CSRF token."""

    principal: Principal
    csrf: str


def _page(title: str, body: str, code: int = 200, session: Session | None = None) -> HTMLResponse:
    logout = ""
    if session is not None:
        logout = (
            f'<form method="post" action="/review/logout"><input type="hidden" name="csrf" '
            f'value="{html.escape(session.csrf)}"><span>{html.escape(session.principal.key_id)}</span> '
            '<button type="submit">Log out</button></form>'
        )
    doc = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><header><h1>{html.escape(title)}</h1>{logout}</header>"
        f"{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=code, headers={**_NO_STORE, "Content-Security-Policy": _CSP})


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body, first value of each field (no multipart: nothing here uploads)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        parsed = parse_qs(body, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "malformed form") from None
    return {name: values[0] for name, values in parsed.items()}


def _same_origin(request: Request, allowed: list[str]) -> bool:
    """Whether a form POST comes from the page's own origin: its ``Origin`` header, else its
    ``Referer``'s, is one of ``allowed`` or (when that is empty) names the request's ``Host``.

    A request with neither header passes (browsers send ``Origin`` with every form POST; a
    client that sends none is no browser to forge a form in), and the form's token still holds.
    """
    origin = request.headers.get("origin")
    if origin is None and (referer := request.headers.get("referer")):
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin is None:
        return True
    if allowed:
        return origin.rstrip("/") in {a.rstrip("/") for a in allowed}
    return origin != "null" and urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def router(settings: Settings) -> APIRouter:
    """The ``/review`` routes on ``settings`` (review band, session lifetime)."""
    routes = APIRouter(prefix="/review", include_in_schema=False)

    def producer_of(request: Request) -> Producer:
        producer: Producer | None = request.app.state.producer
        if producer is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no broker configured (KYC_BROKER_URL)")
        return producer

    def session_of(request: Request) -> Session | None:
        """The request's reviewer session, if its key still exists and still holds the scope."""
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        raw = producer_of(request).jobs.redis.get(keys.review_session_key(_token_hash(token)))
        if raw is None:
            return None
        data = json.loads(raw)
        keyring: KeyRing = request.app.state.keyring
        principal = keyring.by_id(str(data.get("key_id", "")))
        if principal is None or not principal.may(Scope.REVIEW):
            return None
        return Session(principal=principal, csrf=str(data["csrf"]))

    def reviewer(request: Request) -> Session:
        """The session, or 401 (images and form posts: no redirect to a login page)."""
        session = session_of(request)
        if session is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in at /review/login with a key holding 'review'")
        return session

    def check_origin(request: Request) -> None:
        if not _same_origin(request, settings.review_origins):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "form posted from another origin")

    async def checked_form(request: Request, session: Session) -> dict[str, str]:
        check_origin(request)
        form = await _form(request)
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "stale or missing form token; reload the page")
        return form

    def job_of(request: Request, session: Session, job_id: str) -> JobDocument:
        """The session's tenant's job ``job_id``: another tenant's is a 404, like a missing one."""
        doc = producer_of(request).get_job(job_id, session.principal.tenant)
        if doc is None or doc.kind not in queue.REVIEWED_KINDS or doc.result is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job to review (or it expired)")
        return doc

    def login_form(request: Request, message: str = "", code: int = 200) -> HTMLResponse:
        """The login form with a fresh token, set in its cookie too (each answer a new one)."""
        token = secrets.token_urlsafe(32)
        note = f'<p class="low">{html.escape(message)}</p>' if message else ""
        body = (
            f'{note}<form method="post" action="/review/login">'
            f'<input type="hidden" name="csrf" value="{token}"><label>API key '
            '<input type="password" name="key" autocomplete="current-password" required></label> '
            '<button type="submit">Log in</button></form>'
        )
        page = _page("Review: log in", body, code)
        page.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=LOGIN_FORM_TTL_S,
            path="/review/login",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return page

    @routes.get("/login")
    def login_page(request: Request) -> HTMLResponse:
        return login_form(request)

    @routes.post("/login")
    async def login(request: Request) -> Response:
        check_origin(request)
        form = await _form(request)
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
            return login_form(request, "The login form expired; log in again.", status.HTTP_403_FORBIDDEN)
        keyring: KeyRing = request.app.state.keyring
        principal = keyring.principal(form.get("key"))
        if principal is None:
            return login_form(request, "Unknown API key.", status.HTTP_401_UNAUTHORIZED)
        if not principal.may(Scope.REVIEW):
            return login_form(request, "This key lacks the review scope.", status.HTTP_403_FORBIDDEN)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        value = json.dumps({"key_id": principal.key_id, "csrf": csrf})
        producer_of(request).jobs.redis.set(
            keys.review_session_key(_token_hash(token)), value, ex=settings.review_session_ttl_s
        )
        response = RedirectResponse("/review", status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            COOKIE,
            token,
            max_age=settings.review_session_ttl_s,
            path="/review",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/review/login")
        return response

    @routes.post("/logout")
    async def logout(request: Request) -> Response:
        session = reviewer(request)
        await checked_form(request, session)
        token = request.cookies.get(COOKIE, "")
        producer_of(request).jobs.redis.delete(keys.review_session_key(_token_hash(token)))
        response = RedirectResponse("/review/login", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(COOKIE, path="/review")
        return response

    @routes.get("")
    def queue_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/review/login", status.HTTP_303_SEE_OTHER)
        producer, tenant = producer_of(request), session.principal.tenant
        rows = []
        for job_id in queue.pending(producer.jobs.redis, tenant):
            doc = producer.get_job(job_id, tenant)
            if doc is None:
                queue.drop(producer.jobs.redis, tenant, job_id)
                continue
            why = queue.why(settings, doc)
            flags = ", ".join(
                f for f, on in (("confidence in band", why.in_band), ("low liveness", why.low_liveness)) if on
            )
            rows.append(
                f'<tr><td><a href="/review/jobs/{quote(job_id, safe="")}">{html.escape(job_id)}</a></td>'
                f"<td>{_fmt(why.confidence)}</td><td>{_fmt(why.liveness)}</td><td>{html.escape(flags)}</td>"
                f"<td>{html.escape((doc.finished_at or doc.created_at).isoformat(timespec='seconds'))}</td></tr>"
            )
        table = (
            "<table><tr><th>job</th><th>confidence</th><th>liveness</th><th>why</th><th>finished</th></tr>"
            + "".join(rows)
            + "</table>"
            if rows
            else "<p>Nothing to review.</p>"
        )
        band = (
            f"<p>Confidence band {settings.review_confidence_min:.2f}–{settings.review_confidence_max:.2f} "
            f"(operating point {settings.verify_confidence:.2f}); liveness below {settings.review_liveness_below:.2f}.</p>"
        )
        return _page(f"Review queue ({len(rows)})", band + table, session=session)

    @routes.get("/jobs/{job_id}")
    def case_page(request: Request, job_id: JobId) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/review/login", status.HTTP_303_SEE_OTHER)
        doc = job_of(request, session, job_id)
        return _page(f"Case {job_id}", _case_body(settings, doc, session), session=session)

    @routes.post("/jobs/{job_id}/decision")
    async def decision(request: Request, job_id: JobId) -> Response:
        session = reviewer(request)
        form = await checked_form(request, session)
        choice = form.get("decision")
        if choice not in ("approved", "rejected"):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "decision must be approved or rejected")
        note = form.get("note", "").strip()[:1000]
        job_of(request, session, job_id)  # another tenant's job, or none: 404, as on every page
        try:
            queue.decide(
                producer_of(request).jobs.redis,
                settings,
                session.principal.tenant,
                job_id,
                cast(Literal["approved", "rejected"], choice),
                note,
                session.principal.key_id,
            )
        except JobError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, exc.message) from None
        log.info("job %s %s by %s", scoped(session.principal.tenant, job_id), choice, session.principal.key_id)
        return RedirectResponse(f"/review/jobs/{quote(job_id, safe='')}", status.HTTP_303_SEE_OTHER)

    @routes.get("/jobs/{job_id}/{role}/image.jpg")
    def image(request: Request, role: Literal["selfie", "document"], job_id: JobId) -> Response:
        doc = job_of(request, reviewer(request), job_id)
        from api_stub import crops  # OpenCV only once an image is asked for, never for the job routes

        data = crops.boxed(settings, _image_bytes(producer_of(request), doc, role), doc.result or {}, role, DISPLAY_PX)
        return Response(data, media_type="image/jpeg", headers=_NO_STORE)

    @routes.get("/jobs/{job_id}/{role}/crop.jpg")
    def crop(request: Request, role: Literal["selfie", "document"], job_id: JobId) -> Response:
        doc = job_of(request, reviewer(request), job_id)
        face = _matched_face(doc.result or {}, role)
        if face is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {role} face in the result")
        from api_stub import crops

        data = crops.aligned(settings, _image_bytes(producer_of(request), doc, role), face, CROP_PX)
        return Response(data, media_type="image/jpeg", headers=_NO_STORE)

    return routes


def _matched_face(result: dict[str, Any], role: str) -> dict[str, Any] | None:
    """The face of ``role`` the verify compared (its index in that image's faces)."""
    index = result.get(f"{role}_face")
    faces = (result.get(role) or {}).get("faces") or []
    if index is None or not 0 <= int(index) < len(faces):
        return None
    face: dict[str, Any] = faces[int(index)]
    return face


def _image_bytes(producer: Producer, doc: JobDocument, role: str) -> bytes:
    """The stored image of ``role``; gone since the job ran (expired, removed) is a 404."""
    try:
        return producer.images.get(doc.inputs[role])
    except KYCFaceError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{role} image unavailable: {exc.message}") from None


def _reasons(result: dict[str, Any], role: str) -> list[str]:
    """Why faces of ``role`` fell short: partial faces' reasons and the compared face's quality."""
    image = result.get(role) or {}
    found = [str(p["reason"]) for p in image.get("partial_faces") or []]
    face = _matched_face(result, role)
    if face is not None and face.get("quality"):
        found += [str(r) for r in face["quality"].get("reasons") or []]
    return list(dict.fromkeys(found))


def _case_body(settings: Settings, doc: JobDocument, session: Session) -> str:
    result: dict[str, Any] = doc.result or {}
    why = queue.why(settings, doc)
    job = quote(doc.job_id, safe="")
    confidence = result.get("confidence")
    point = settings.verify_confidence
    side = "" if confidence is None else ("above" if confidence >= point else "below")
    liveness = result.get("liveness") or {}
    live_class = "low" if why.low_liveness else "ok"
    images = "".join(
        f'<figure><img alt="{role} with face boxes" src="/review/jobs/{job}/{role}/image.jpg">'
        f"<figcaption>{role}</figcaption></figure>"
        for role in ROLES
    )
    crops = "".join(
        f'<figure><img alt="{role} aligned crop" src="/review/jobs/{job}/{role}/crop.jpg">'
        f"<figcaption>{role} crop</figcaption></figure>"
        for role in ROLES
        if _matched_face(result, role) is not None
    )
    facts = [
        ("answer", f"{result.get('code', '')} {html.escape(str(result.get('message') or ''))}"),
        ("verified", str(result.get("verified"))),
        ("confidence", f'<span class="{"low" if why.in_band else "ok"}">{_fmt(confidence)}</span> '
                       f"({side} the operating point {point:.2f})"),
        ("liveness", f'<span class="{live_class}">{_fmt(liveness.get("score"))}</span>'
                     f" (floor {settings.review_liveness_below:.2f})" if liveness else "not scored"),
        *((f"{role} reasons", html.escape(", ".join(_reasons(result, role)) or "none")) for role in ROLES),
    ]  # fmt: skip
    table = "".join(f"<tr><td>{name}</td><td>{value}</td></tr>" for name, value in facts)
    if doc.review is not None:
        r = doc.review
        decided = (
            f'<p id="decision" class="ok">{html.escape(r.decision)} by {html.escape(r.reviewer)} at '
            f"{html.escape(r.decided_at.isoformat(timespec='seconds'))}"
            f"{': ' + html.escape(r.note) if r.note else ''}</p>"
        )
    else:
        decided = (
            f'<form class="decide" method="post" action="/review/jobs/{job}/decision">'
            f'<input type="hidden" name="csrf" value="{html.escape(session.csrf)}">'
            '<label>Note<br><textarea name="note" maxlength="1000"></textarea></label><br>'
            '<button type="submit" name="decision" value="approved">Approve</button>'
            '<button type="submit" name="decision" value="rejected">Reject</button></form>'
        )
    return (
        '<p><a href="/review">&larr; queue</a></p>'
        f'<div class="pair">{images}</div><h2>Aligned crops</h2><div class="pair crops">{crops}</div>'
        f'<table class="facts">{table}</table>{decided}'
    )

"""Public tracking endpoints (outside ``/api``): click redirect, open pixel, one-click unsubscribe
(RFC 8058) with its confirmation page, and the hosted subscription preference page.

Every URL carries a signed token (:mod:`clarion.tracking.tokens`); a token that does not verify
is a 404. The click redirect goes only to the URL inside the signed token.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from clarion.api.errors import ApiError, ErrorCode
from clarion.tracking import service
from clarion.tracking.tokens import TokenSigner

router = APIRouter(tags=["tracking"])

PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, private"}


def _payload(request: Request, kind: str, token: str) -> dict[str, Any]:
    settings = request.app.state.settings
    payload = TokenSigner(settings.resolved_secret_key()).verify(kind, token)
    if payload is None or not isinstance(payload.get("p"), int):
        raise ApiError(ErrorCode.resource_missing, "No such link.", param="token")
    return payload


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = (
        '<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f'<title>{html.escape(title)}</title></head><body style="font-family:sans-serif;max-width:32rem;'
        f'margin:3rem auto;padding:0 1rem"><h1>{html.escape(title)}</h1>{body}</body></html>'
    )
    return HTMLResponse(doc, status_code=status, headers=NO_STORE)


@router.get("/t/c/{token}", status_code=302, summary="Follow a tracked link", operation_id="trackClick")
async def track_click(token: str, request: Request) -> Response:
    payload = _payload(request, "c", token)
    url = payload.get("u")
    if not isinstance(url, str):
        raise ApiError(ErrorCode.resource_missing, "No such link.", param="token")
    await service.record(request.app.state.db, payload["p"], payload.get("m"), "clicked", {"url": url})
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.get("/t/o/{token}", summary="Open-tracking pixel", operation_id="trackOpen")
async def track_open(token: str, request: Request) -> Response:
    payload = _payload(request, "o", token)
    await service.record(request.app.state.db, payload["p"], payload.get("m"), "opened", None)
    return Response(PIXEL_GIF, media_type="image/gif", headers=NO_STORE)


@router.get(
    "/u/{token}", response_class=HTMLResponse, summary="Unsubscribe confirmation page", operation_id="unsubscribePage"
)
async def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    payload = _payload(request, "u", token)
    name = await service.subscription_name(request.app.state.db, payload["p"], payload.get("s"))
    what = f" from <strong>{html.escape(name)}</strong>" if name else ""
    return _page(
        "Unsubscribe",
        f"<p>Do you want to unsubscribe{what}?</p>"
        f'<form method="post" action="{html.escape(str(request.url.path))}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@router.post(
    "/u/{token}", response_class=HTMLResponse, summary="One-click unsubscribe (RFC 8058)", operation_id="unsubscribe"
)
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    payload = _payload(request, "u", token)
    await service.unsubscribe(request.app.state.db, payload)
    return _page("Unsubscribed", "<p>You will no longer receive these messages.</p>")


@router.get(
    "/p/{token}", response_class=HTMLResponse, summary="Subscription preferences page", operation_id="preferencesPage"
)
async def preferences_page(token: str, request: Request) -> HTMLResponse:
    payload = _payload(request, "p", token)
    rows = await service.preferences(request.app.state.db, payload["p"], payload.get("u"))
    if rows is None:
        raise ApiError(ErrorCode.resource_missing, "No such link.", param="token")
    items = "".join(
        f'<p><label><input type="checkbox" name="sub_{sid}" value="1"{" checked" if subscribed else ""}> '
        f"{html.escape(name)}</label></p>"
        for sid, name, subscribed in rows
    )
    return _page(
        "Your subscriptions",
        f'<form method="post" action="{html.escape(str(request.url.path))}">{items}'
        '<button type="submit">Save</button></form>',
    )


@router.post(
    "/p/{token}", response_class=HTMLResponse, summary="Save subscription preferences", operation_id="savePreferences"
)
async def save_preferences(token: str, request: Request) -> HTMLResponse:
    payload = _payload(request, "p", token)
    form = await request.form()
    chosen = {str(k)[4:] for k in form if str(k).startswith("sub_")}
    saved = await service.save_preferences(request.app.state.db, payload["p"], payload.get("u"), chosen)
    if saved is None:
        raise ApiError(ErrorCode.resource_missing, "No such link.", param="token")
    return _page("Preferences saved", "<p>Your subscription choices are saved.</p>")

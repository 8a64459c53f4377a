"""Templates, locales, preview/proof and the tracking endpoints over HTTP, on both backends."""

from __future__ import annotations

import email
import email.policy
import re
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from clarion.campaigns.models import Campaign
from clarion.core.db import Database
from clarion.delivery.models import Message, MessageEvent, Trigger
from clarion.providers.capture import CapturedMessage
from clarion.providers.models import Provider
from clarion.subscriptions.models import Subscription, UserSubscription
from clarion.tracking.tokens import TokenSigner
from clarion.users.models import User
from tests.conftest import Tenant, assert_problem

HTML = '<html><body><p>Hi {{ user.first_name }}</p><a href="https://shop.example/x">Shop</a></body></html>'


async def make_campaign(db: Database, tenant: Tenant, channel: str = "email") -> tuple[int, int]:
    async with db.transaction(project_id=tenant.project_id) as s:
        provider = Provider(type="capture", name="sink", group=channel)
        s.add(provider)
        sub = Subscription(name="News", channel=channel, is_public=True)
        s.add(sub)
        await s.flush()
        campaign = Campaign(type="trigger", name="c", channel=channel, subscription_id=sub.id, provider_id=provider.id)
        s.add(campaign)
        await s.flush()
        return campaign.id, sub.id


def email_body(campaign_id: int, locale: str = "en", **data: Any) -> dict[str, Any]:
    base = {
        "from": {"name": "Shop", "address": "news@shop.example"},
        "subject": "Hi {{ user.first_name }}",
        "html": HTML,
    }
    return {"type": "email", "campaign_id": campaign_id, "locale": locale, "name": "t", "data": {**base, **data}}


async def test_crud_and_errors(client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant) -> None:
    cid, _ = await make_campaign(db, tenant)
    r = await client.post("/api/client/templates", json=email_body(cid), headers=tenant.sk)
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["type"] == "email" and t["locale"] == "en" and t["data"]["subject"] == "Hi {{ user.first_name }}"
    assert_problem(
        await client.post("/api/client/templates", json=email_body(cid), headers=tenant.sk),
        409,
        "resource_already_exists",
    )
    bad = await client.post(
        "/api/client/templates", json=email_body(cid, "fr", html="<p>\n {{ user.x | }</p>"), headers=tenant.sk
    )
    body = assert_problem(bad, 422, "validation_failed")
    assert body["errors"][0]["param"] == "data.html" and "line 2" in body["errors"][0]["message"]
    assert_problem(
        await client.post("/api/client/templates", json=email_body(cid, "en-au"), headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert_problem(
        await client.post("/api/client/templates", json={**email_body(cid, "de"), "type": "push"}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    unknown = await client.post("/api/client/templates", json=email_body(cid, "de", wat=1), headers=tenant.sk)
    assert assert_problem(unknown, 422, "validation_failed")["errors"][0]["code"] == "parameter_unknown"
    # PATCH: partial data merge; type must match; data required
    r = await client.patch(f"/api/client/templates/{t['id']}", json={"data": {"subject": "New"}}, headers=tenant.sk)
    assert r.status_code == 200 and r.json()["data"]["subject"] == "New" and r.json()["data"]["html"] == HTML
    assert_problem(
        await client.patch(f"/api/client/templates/{t['id']}", json={"type": "text", "data": {}}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert_problem(
        await client.patch(f"/api/client/templates/{t['id']}", json={"name": "x"}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    # isolation
    assert_problem(
        await client.get(f"/api/client/templates/{t['id']}", headers=other_tenant.sk), 404, "resource_missing"
    )
    assert_problem(
        await client.post("/api/client/templates", json=email_body(cid, "it"), headers=other_tenant.sk),
        404,
        "resource_missing",
    )
    listed = await client.get("/api/client/templates", headers=other_tenant.sk)
    assert listed.json()["results"] == []
    listed = await client.get("/api/client/templates", headers=tenant.sk)
    assert [x["id"] for x in listed.json()["results"]] == [t["id"]]
    r = await client.delete(f"/api/client/templates/{t['id']}", headers=tenant.sk)
    assert r.status_code == 200 and r.json() is True
    assert_problem(await client.get(f"/api/client/templates/{t['id']}", headers=tenant.sk), 404, "resource_missing")


async def test_visual_editor_compiles_mjml(client: httpx.AsyncClient, db: Database, tenant: Tenant) -> None:
    cid, _ = await make_campaign(db, tenant)
    mjml = (
        "<mjml><mj-body><mj-section><mj-column><mj-text>Hello {{ user.first_name }}</mj-text></mj-column>"
        "</mj-section></mj-body></mjml>"
    )
    r = await client.post(
        "/api/client/templates", json=email_body(cid, editor="visual", mjml=mjml, html=None), headers=tenant.sk
    )
    assert r.status_code == 200, r.text
    html = r.json()["data"]["html"]
    assert html.startswith("<!doctype html>") and "Hello {{ user.first_name }}" in html
    r = await client.patch(
        f"/api/client/templates/{r.json()['id']}", json={"data": {"editor": "code"}}, headers=tenant.sk
    )
    assert "mjml" not in r.json()["data"] and r.json()["data"]["html"] == html


async def test_locales(client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant) -> None:
    r = await client.post("/api/client/locales", json={"key": "fr", "label": "French"}, headers=tenant.sk)
    assert r.status_code == 200 and r.json()["key"] == "fr"
    lid = r.json()["id"]
    assert_problem(
        await client.post("/api/client/locales", json={"key": "fr"}, headers=tenant.sk), 409, "resource_already_exists"
    )
    for bad in ("en-au", "EN", "english", "e"):
        assert_problem(
            await client.post("/api/client/locales", json={"key": bad}, headers=tenant.sk),
            422,
            "validation_failed",
        )
    assert (await client.get("/api/client/locales", headers=other_tenant.sk)).json()["results"] == []
    assert_problem(await client.delete(f"/api/client/locales/{lid}", headers=other_tenant.sk), 404, "resource_missing")
    cid, _ = await make_campaign(db, tenant)
    t = (await client.post("/api/client/templates", json=email_body(cid, "fr"), headers=tenant.sk)).json()
    assert_problem(await client.delete(f"/api/client/locales/{lid}", headers=tenant.sk), 409, "state_conflict")
    await client.delete(f"/api/client/templates/{t['id']}", headers=tenant.sk)
    assert (await client.delete(f"/api/client/locales/{lid}", headers=tenant.sk)).json() is True


async def test_preview_and_proof(client: httpx.AsyncClient, db: Database, tenant: Tenant) -> None:
    cid, _ = await make_campaign(db, tenant)
    t = (await client.post("/api/client/templates", json=email_body(cid), headers=tenant.sk)).json()
    r = await client.post(
        f"/api/client/templates/{t['id']}/preview",
        json={"user": {"email": "a@x.example", "first_name": "<b>Ann</b>"}},
        headers=tenant.sk,
    )
    assert r.status_code == 200, r.text
    assert r.json()["subject"] == "Hi <b>Ann</b>" and "Hi &lt;b&gt;Ann&lt;/b&gt;" in r.json()["html"]
    r = await client.post(
        f"/api/client/templates/{t['id']}/proof",
        json={"recipient": "proof@x.example", "variables": {"first_name": "Zed"}},
        headers=tenant.sk,
    )
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "delivered"
    async with db.transaction(project_id=tenant.project_id) as s:
        row = await s.execute(select(CapturedMessage).where(CapturedMessage.message_id == r.json()["message_id"]))
        captured = row.scalar_one()
    assert captured.to == "proof@x.example" and captured.content["subject"] == "Hi Zed"
    parsed = email.message_from_bytes(captured.mime.encode(), policy=email.policy.default)
    assert parsed["To"] == "proof@x.example" and parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert_problem(
        await client.post(f"/api/client/templates/{t['id']}/proof", json={}, headers=tenant.sk),
        422,
        "validation_failed",
    )


async def test_tracking_endpoints(client: httpx.AsyncClient, db: Database, app: FastAPI, tenant: Tenant) -> None:
    cid, sub_id = await make_campaign(db, tenant)
    async with db.transaction(project_id=tenant.project_id) as s:
        user = User(external_id="u1", email="u@x.example", data={})
        s.add(user)
        trig = Trigger(public_id="trg_T1" + str(cid), campaign_id=cid, kind="user")
        s.add(trig)
        await s.flush()
        msg = Message(public_id=f"msg_M{cid}", campaign_id=cid, trigger_id=trig.id, user_id=user.id, channel="email")
        s.add(msg)
        await s.flush()
        user_id, msg_id = user.id, msg.id
    signer = TokenSigner(app.state.settings.resolved_secret_key())
    p = tenant.project_id
    click = signer.sign("c", {"p": p, "m": f"msg_M{cid}", "u": "https://shop.example/a?b=1"})
    for _ in range(2):
        r = await client.get(f"/t/c/{click}")
        assert r.status_code == 302 and r.headers["location"] == "https://shop.example/a?b=1"
    head, sig = click.split(".")
    forged = signer.sign("c", {"p": p, "m": f"msg_M{cid}", "u": "https://evil.example"}).split(".")[0]
    assert (await client.get(f"/t/c/{forged}.{sig}")).status_code == 404
    assert (await client.get(f"/t/c/{head}.{sig[:-1]}")).status_code == 404
    assert (await client.get(f"/t/o/{click}")).status_code == 404  # kind mismatch
    r = await client.get(f"/t/o/{signer.sign('o', {'p': p, 'm': f'msg_M{cid}'})}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    unsub = signer.sign("u", {"p": p, "m": f"msg_M{cid}", "u": user_id, "s": sub_id})
    page = await client.get(f"/u/{unsub}")
    assert page.status_code == 200 and "News" in page.text and 'method="post"' in page.text
    async with db.transaction(project_id=p) as s:
        assert (await s.execute(select(UserSubscription))).first() is None  # GET changes nothing
    r = await client.post(
        f"/u/{unsub}",
        content="List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    async with db.transaction(project_id=p) as s:
        state = (await s.execute(select(UserSubscription.state).where(UserSubscription.user_id == user_id))).scalar()
        events = [
            e.type for e in (await s.execute(select(MessageEvent).where(MessageEvent.message_id == msg_id))).scalars()
        ]
        campaign = (await s.execute(select(Campaign).where(Campaign.id == cid))).scalar_one()
    assert state == 0
    assert sorted(events) == ["clicked", "clicked", "opened", "unsubscribed"]
    assert campaign.clicks == 1 and campaign.opens == 1  # unique per message
    prefs = signer.sign("p", {"p": p, "u": user_id})
    page = await client.get(f"/p/{prefs}")
    assert page.status_code == 200 and f'name="sub_{sub_id}"' in page.text
    assert not re.search(rf'name="sub_{sub_id}" value="1" checked', page.text)
    r = await client.post(f"/p/{prefs}", data={f"sub_{sub_id}": "1"})
    assert r.status_code == 200
    async with db.transaction(project_id=p) as s:
        state = (
            await s.execute(
                select(UserSubscription.state).where(
                    UserSubscription.user_id == user_id, UserSubscription.subscription_id == sub_id
                )
            )
        ).scalar()
    assert state == 1
    # Replace the last six characters (a suffix that differs in whole base64 digits, not only in
    # the padding bits the final digit may carry).
    tampered = prefs[:-6] + ("AAAAAA" if not prefs.endswith("AAAAAA") else "BBBBBB")
    assert (await client.get(f"/p/{tampered}")).status_code == 404


async def test_tracking_paths_in_openapi(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/api/openapi.json")).json()["paths"]
    for path in (
        "/t/c/{token}",
        "/t/o/{token}",
        "/u/{token}",
        "/p/{token}",
        "/api/client/templates",
        "/api/client/locales",
    ):
        assert path in paths

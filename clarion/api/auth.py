"""Bearer-key authentication, surfaces and roles (contract §A1–§A2).

The principal is resolved once per request (the idempotency and rate-limit middleware reuse it)
from the SHA-256 of the bearer value; revoked keys never resolve, so revocation is immediate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from fastapi import Depends, Request
from sqlalchemy import bindparam, select

from clarion.api.errors import ApiError, ErrorCode
from clarion.core.db import Database
from clarion.core.ids import hash_key
from clarion.keys.models import OrganizationApiKey, ProjectApiKey
from clarion.orgs.models import Project

PROJECT_ROLES = ("support", "smtpproxy", "editor", "publisher", "admin")
ORG_ROLES = ("member", "admin", "owner")

ProjectRole = Literal["support", "smtpproxy", "editor", "publisher", "admin"]
OrgRole = Literal["member", "admin", "owner"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a project key (`sk_`/`pk_`) or an organisation key (`ok_`)."""

    kind: Literal["project", "organization"]
    key_id: int
    organization_id: int
    project_id: int | None
    scope: Literal["secret", "public", "organization"]
    role: str

    @property
    def rate_key(self) -> str:
        return f"{self.kind}:{self.key_id}"


def project_role_at_least(role: str, minimum: str) -> bool:
    return PROJECT_ROLES.index(role) >= PROJECT_ROLES.index(minimum)


def org_role_at_least(role: str, minimum: str) -> bool:
    return ORG_ROLES.index(role) >= ORG_ROLES.index(minimum)


def bearer_token(request_headers: dict[str, str] | None, authorization: str | None) -> str | None:
    value = authorization if authorization is not None else (request_headers or {}).get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


_PROJECT_KEY = (
    select(
        ProjectApiKey.id,
        ProjectApiKey.project_id,
        ProjectApiKey.scope,
        ProjectApiKey.role,
        Project.organization_id,
    )
    .join(Project, Project.id == ProjectApiKey.project_id)
    .where(ProjectApiKey.key_hash == bindparam("digest"), ProjectApiKey.revoked_at.is_(None))
)
_ORG_KEY = select(OrganizationApiKey.id, OrganizationApiKey.organization_id, OrganizationApiKey.role).where(
    OrganizationApiKey.key_hash == bindparam("digest"), OrganizationApiKey.revoked_at.is_(None)
)


async def resolve_principal(db: Database, token: str) -> Principal | None:
    """Look a bearer value up by its hash; ``None`` for unknown, malformed or revoked keys.

    One statement (key joined to its project), read on every request: nothing is cached, so a
    revocation takes effect at once.
    """
    prefix = token[:3]
    if prefix not in ("sk_", "pk_", "ok_"):
        return None
    params = {"digest": hash_key(token)}
    async with db.lookup() as connection:
        if prefix == "ok_":
            org_key = (await connection.execute(_ORG_KEY, params)).first()
            if org_key is None:
                return None
            return Principal("organization", org_key.id, org_key.organization_id, None, "organization", org_key.role)
        key = (await connection.execute(_PROJECT_KEY, params)).first()
    if key is None:
        return None
    expected = "sk_" if key.scope == "secret" else "pk_"
    if prefix != expected:
        return None
    return Principal("project", key.id, key.organization_id, key.project_id, key.scope, key.role)


_UNRESOLVED = object()


async def principal_for_request(request: Request) -> Principal | None:
    """The request's principal, resolved at most once and cached on the request scope."""
    state = request.scope.setdefault("state", {})
    cached = state.get("principal", _UNRESOLVED)
    if cached is not _UNRESOLVED:
        return cast("Principal | None", cached)
    token = bearer_token(None, request.headers.get("authorization"))
    principal = await resolve_principal(request.app.state.db, token) if token else None
    state["principal"] = principal
    return principal


def _unauthenticated(message: str = "A valid API key is required for this operation.") -> ApiError:
    return ApiError(ErrorCode.authentication_required, message)


def project_key(minimum_role: ProjectRole = "support", *, allow_public: bool = False):  # type: ignore[no-untyped-def]
    """Dependency: a project key on the client surface with at least ``minimum_role``.

    ``pk_`` keys pass only where ``allow_public`` is set (the three allowlisted operations);
    anywhere else they get 401, as the contract says.
    """

    async def dependency(request: Request) -> Principal:
        principal = await principal_for_request(request)
        if principal is None or principal.kind != "project":
            raise _unauthenticated()
        if principal.scope == "public":
            if not allow_public:
                raise _unauthenticated("Publishable keys (pk_) cannot call this operation.")
            return principal
        if not project_role_at_least(principal.role, minimum_role):
            raise ApiError(ErrorCode.permission_denied, f"This operation needs the {minimum_role} role or higher.")
        return principal

    return Depends(dependency)


def org_key(minimum_role: OrgRole = "member"):  # type: ignore[no-untyped-def]
    """Dependency: an organisation key (`ok_`) on the admin surface with at least ``minimum_role``."""

    async def dependency(request: Request) -> Principal:
        principal = await principal_for_request(request)
        if principal is None or principal.kind != "organization":
            raise _unauthenticated()
        if not org_role_at_least(principal.role, minimum_role):
            raise ApiError(ErrorCode.permission_denied, f"This operation needs the organisation {minimum_role} role.")
        return principal

    return Depends(dependency)


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db

"""Wire models for project keys (§B10) and organisation keys (§B1 #62–66)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from clarion.api.schemas import RequestModel, ResponseModel

KeyName = Annotated[str, Field(min_length=1, max_length=200)]
ProjectRoleName = Literal["support", "smtpproxy", "editor", "publisher", "admin"]
OrgRoleName = Literal["member", "admin", "owner"]


class ProjectApiKeyCreate(RequestModel):
    name: KeyName
    scope: Literal["public", "secret"] = "secret"
    description: str | None = None
    role: ProjectRoleName | None = None


class ProjectApiKeyUpdate(RequestModel):
    name: KeyName | None = None
    description: str | None = None
    scope: Literal["public", "secret"] | None = None
    role: ProjectRoleName | None = None


class ProjectApiKeyOut(ResponseModel):
    id: int
    project_id: int
    name: str
    description: str | None = None
    scope: Literal["public", "secret"]
    role: ProjectRoleName
    value: str = Field(description="Full key on create only; afterwards prefix + last four.")
    is_system_key: bool = False
    created_at: datetime
    updated_at: datetime


class OrganizationApiKeyCreate(RequestModel):
    name: KeyName
    description: str | None = None
    role: OrgRoleName = "member"


class OrganizationApiKeyUpdate(RequestModel):
    name: KeyName | None = None
    description: str | None = None
    role: OrgRoleName | None = None


class OrganizationApiKeyOut(ResponseModel):
    id: int
    organization_id: int
    name: str
    description: str | None = None
    role: OrgRoleName
    value: str = Field(description="Full `ok_` key on create only; afterwards prefix + last four.")
    created_at: datetime
    updated_at: datetime

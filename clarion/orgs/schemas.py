"""Wire models for projects, organisations and onboarding (contract §B1)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import AfterValidator, Field

from clarion.api.schemas import Locale, RequestModel, ResponseModel, Timezone


def _website(value: str | None) -> str | None:
    if value is None or value == "":
        return value
    candidate = value if "://" in value else f"https://{value}"
    parsed = urlparse(candidate)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http or https URL")
    return value


def _https(value: str | None) -> str | None:
    if value is None or value == "":
        return value
    parsed = urlparse(value)
    if parsed.scheme != "https" or not parsed.netloc:
        raise ValueError("must be an https URL")
    return value


WebsiteUrl = Annotated[str | None, AfterValidator(_website)]
HttpsUrl = Annotated[str | None, AfterValidator(_https)]
ProjectName = Annotated[str, Field(min_length=2, max_length=100)]


class OrgProjectCreate(RequestModel):
    name: ProjectName
    description: str | None = None
    website_url: WebsiteUrl = None
    locale: Locale
    timezone: Timezone
    text_opt_out_message: str | None = None
    text_help_message: str | None = None
    link_wrap_email: bool | None = None
    link_wrap_push: bool | None = None
    track_opens_email: bool | None = None
    deeplink_mirror_url: HttpsUrl = None


class OrgProjectUpdate(RequestModel):
    name: ProjectName | None = None
    description: str | None = None
    website_url: WebsiteUrl = None
    locale: Locale | None = None
    timezone: Timezone | None = None
    text_opt_out_message: str | None = None
    text_help_message: str | None = None
    link_wrap_email: bool | None = None
    link_wrap_push: bool | None = None
    track_opens_email: bool | None = None
    deeplink_mirror_url: HttpsUrl = None


class ProjectFields(ResponseModel):
    """A project as listed (OrgProject without `role`/`has_provider`)."""

    id: int
    organization_id: int
    name: str
    description: str | None = None
    website_url: str | None = None
    locale: str
    timezone: str
    text_opt_out_message: str | None = None
    text_help_message: str | None = None
    link_wrap_email: bool | None = None
    link_wrap_push: bool | None = None
    track_opens_email: bool | None = None
    deeplink_mirror_url: str | None = None
    created_at: datetime | None
    updated_at: datetime | None


class OrgProject(ProjectFields):
    role: Literal["support", "smtpproxy", "editor", "publisher", "admin"] | None = None
    has_provider: bool | None = None


class ProjectOut(ProjectFields):
    """GET /me: the caller's project with its role and whether it can deliver."""

    role: Literal["support", "smtpproxy", "editor", "publisher", "admin"]
    has_provider: bool


class OrgOnboardingIndustry(StrEnum):
    ecommerce_retail = "ecommerce_retail"
    saas_technology = "saas_technology"
    marketing_agency = "marketing_agency"
    healthcare = "healthcare"
    education = "education"
    financial_services = "financial_services"
    real_estate = "real_estate"
    hospitality_travel = "hospitality_travel"
    manufacturing = "manufacturing"
    media_entertainment = "media_entertainment"
    nonprofit = "nonprofit"
    professional_services = "professional_services"
    other = "other"


class OrgOnboardingReferralSource(StrEnum):
    google_search = "google_search"
    social_media = "social_media"
    linkedin = "linkedin"
    youtube = "youtube"
    friend_referral = "friend_referral"
    blog_article = "blog_article"
    podcast = "podcast"
    newsletter = "newsletter"
    paid_ad = "paid_ad"
    conference_event = "conference_event"
    other = "other"


class OrgOnboardingMetadataCreate(RequestModel):
    plans_shopify_woocommerce: bool | None = None
    industry: OrgOnboardingIndustry | None = None
    referral_source: OrgOnboardingReferralSource | None = None
    wants_consultation: bool
    marketing_emails: bool


class OrgOnboardingMetadata(ResponseModel):
    project_id: int
    plans_shopify_woocommerce: bool | None = None
    industry: OrgOnboardingIndustry | None = None
    referral_source: OrgOnboardingReferralSource | None = None
    wants_consultation: bool
    marketing_emails: bool
    created_at: datetime
    updated_at: datetime


class OrganizationOut(ResponseModel):
    id: int
    username: str
    domain: str | None = None
    created_at: datetime
    updated_at: datetime


class CurrentOrganization(ResponseModel):
    organization: OrganizationOut
    role: Literal["member", "admin", "owner"]

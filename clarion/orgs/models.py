"""Organisations own projects; every other domain's rows belong to a project."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, UTCDateTime
from clarion.core.models import IntPK, Timestamps


class Organization(IntPK, Timestamps, Base):
    __tablename__ = "organizations"

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    username: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    domain: Mapped[str | None] = mapped_column(String(255))


class Project(IntPK, Timestamps, Base):
    __tablename__ = "projects"

    organization_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    website_url: Mapped[str | None] = mapped_column(String(2048))
    locale: Mapped[str] = mapped_column(String(35), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    text_opt_out_message: Mapped[str | None] = mapped_column(Text)
    text_help_message: Mapped[str | None] = mapped_column(Text)
    link_wrap_email: Mapped[bool | None] = mapped_column(Boolean)
    link_wrap_push: Mapped[bool | None] = mapped_column(Boolean)
    track_opens_email: Mapped[bool | None] = mapped_column(Boolean)
    deeplink_mirror_url: Mapped[str | None] = mapped_column(String(2048))


class OnboardingMetadata(Timestamps, Base):
    __tablename__ = "project_onboarding_metadata"

    project_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    plans_shopify_woocommerce: Mapped[bool | None] = mapped_column(Boolean)
    industry: Mapped[str | None] = mapped_column(String(40))
    referral_source: Mapped[str | None] = mapped_column(String(40))
    wants_consultation: Mapped[bool] = mapped_column(Boolean, nullable=False)
    marketing_emails: Mapped[bool] = mapped_column(Boolean, nullable=False)


class AdminUser(IntPK, Timestamps, Base):
    """A person who signs in to the admin UI; the password is stored as an Argon2 hash."""

    __tablename__ = "admin_users"
    __table_args__ = (UniqueConstraint("organization_id", "email"),)

    organization_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(20), nullable=False, default="owner")
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

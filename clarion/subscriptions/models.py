"""Subscription types, users' states on them, user sessions' target, and the suppression list."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.clock import utcnow
from clarion.core.db import Base, UTCDateTime
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned

CHANNELS = ("email", "text", "push", "webhook", "in_app")
UNSUBSCRIBED, SUBSCRIBED, OPTED_IN = 0, 1, 2


class Subscription(ProjectOwned, IntPK, Timestamps, Base):
    """A subscription type (e.g. "Marketing email") on one channel."""

    __tablename__ = "subscriptions"

    name: Mapped[str] = mapped_column(String(255), nullable=False)
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    is_public: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class UserSubscription(ProjectOwned, Base):
    """A user's explicit state on a subscription type; no row means subscribed (§E10)."""

    __tablename__ = "user_subscriptions"
    __table_args__ = (Index("ix_user_subscriptions_subscription_state", "project_id", "subscription_id", "state"),)

    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("subscriptions.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


class Suppression(ProjectOwned, IntPK, Timestamps, Base):
    """An address that must never receive on a channel (hard bounce, complaint, STOP, manual).

    ``address`` is normalised the way user addresses are stored (lower-cased email, E.164 phone),
    so the eligibility join is an equality on ``(project_id, channel, address)``.
    """

    __tablename__ = "suppressions"
    __table_args__ = (
        Index("ux_suppressions_project_channel_address", "project_id", "channel", "address", unique=True),
    )

    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    address: Mapped[str] = mapped_column(String(320), nullable=False)
    reason: Mapped[str] = mapped_column(String(20), nullable=False)

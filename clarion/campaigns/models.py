"""The campaign row (contract §B3). Delivery counters are maintained incrementally by the
pipeline, never computed by scanning messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, JSONDoc, UTCDateTime
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned

CAMPAIGN_TYPES = ("blast", "trigger")
CHANNELS = ("email", "text", "push", "webhook", "in_app")
CAMPAIGN_STATES = ("draft", "scheduled", "loading", "running", "finished", "aborting", "aborted")


class Campaign(ProjectOwned, IntPK, Timestamps, Base):
    __tablename__ = "campaigns"

    type: Mapped[str] = mapped_column(String(10), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    channel: Mapped[str] = mapped_column(String(10), nullable=False)
    subscription_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    provider_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("providers.id"), nullable=False)
    list_ids: Mapped[list[int] | None] = mapped_column(JSONDoc)
    exclusion_list_ids: Mapped[list[int] | None] = mapped_column(JSONDoc)
    state: Mapped[str] = mapped_column(String(10), nullable=False, default="draft")
    send_in_user_timezone: Mapped[bool | None] = mapped_column(Boolean)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    custom_domain_id: Mapped[int | None] = mapped_column(BigInteger)
    created_by: Mapped[int | None] = mapped_column(BigInteger)
    description: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # CampaignDelivery counters, updated in the same transactions that change message states.
    sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    opens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    clicks: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    bounced: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    delivered: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    skipped: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class CampaignCounterDelta(IntPK, Base):
    """Counts added to a campaign's ``total``/``skipped`` and not yet folded into its row
    (:mod:`clarion.campaigns.counters`). Appending a row takes no lock on the campaign, so
    concurrent triggers never queue behind each other on its counters."""

    __tablename__ = "campaign_counter_deltas"

    campaign_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    skipped: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

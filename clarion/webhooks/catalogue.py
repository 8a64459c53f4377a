"""The event names an endpoint may subscribe to (contract §E3): the message lifecycle and the
SPEC's 27 delivery names."""

from __future__ import annotations

from typing import Literal, get_args

MessageEventType = Literal[
    "message.queued",
    "message.sent",
    "message.delivered",
    "message.bounced",
    "message.opened",
    "message.clicked",
    "message.failed",
    "message.complained",
    "message.unsubscribed",
    "message.skipped",
]

SpecEventType = Literal[
    "queue.queue-message-authenticated",
    "queue.rescheduled",
    "queue.quota-exceeded",
    "delivery.concurrency-limit-exceeded",
    "delivery.attempt-start",
    "delivery.attempt-end",
    "delivery.completed",
    "delivery.delivered",
    "delivery.dsn-perm-fail",
    "delivery.dsn-temp-fail",
    "delivery.failed",
    "delivery.mail-from-rejected",
    "delivery.message-rejected",
    "delivery.rcpt-to-rejected",
    "delivery.rcpt-to-failed",
    "delivery.mx-lookup-failed",
    "delivery.ip-lookup-failed",
    "delivery.null-mx",
    "delivery.connect-error",
    "delivery.greeting-failed",
    "delivery.ehlo-rejected",
    "delivery.start-tls-error",
    "delivery.start-tls-unavailable",
    "delivery.implicit-tls-error",
    "incoming-report.abuse-report",
    "incoming-report.fraud-report",
    "incoming-report.virus-report",
]

WebhookEventType = Literal[MessageEventType, SpecEventType]

MESSAGE_EVENT_TYPES: tuple[str, ...] = get_args(MessageEventType)
SPEC_EVENT_TYPES: tuple[str, ...] = get_args(SpecEventType)
EVENT_TYPES: frozenset[str] = frozenset(MESSAGE_EVENT_TYPES + SPEC_EVENT_TYPES)

# The event type of `POST /webhooks/{id}/test` (not subscribable; sent to the one endpoint).
TEST_EVENT_TYPE = "test.webhook-test"

WebhookStatus = Literal["active", "inactive", "disabled"]
DeliveryState = Literal["queued", "running", "succeeded", "failed", "held"]

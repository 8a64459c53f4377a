"""Outbound webhooks: endpoints, the event outbox, signed dispatch with retries, delivery logs, replay."""

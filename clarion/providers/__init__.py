"""Delivery providers (SMTP, SMS/push vendors, webhook, capture) and their credentials."""

"""Campaigns: authored sends (audience, template, send-time settings) fired by schedule or trigger."""

"""Organisations, projects, onboarding metadata and admin users (the admin surface)."""

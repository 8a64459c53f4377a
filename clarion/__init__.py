"""Clarion: a self-hosted, multi-channel messaging platform with a Spotzee-compatible API."""

__version__ = "0.1.0"
API_VERSION = "2026-04-28"

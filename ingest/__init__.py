"""PilotChain's meter ingest: signed meter readings from a Redis stream to Settlement."""

from __future__ import annotations

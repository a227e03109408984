"""Normalize: raw message-trace records -> ECS documents (pure functions, no I/O but mmdb reads)."""

from __future__ import annotations

from exotrace.normalize.ecs import ECS_VERSION, EXTRA_FIELDS, NormalizeError, NormalizeOptions, Normalizer

__all__ = ["ECS_VERSION", "EXTRA_FIELDS", "NormalizeError", "NormalizeOptions", "Normalizer"]

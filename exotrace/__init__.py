"""exotrace: Exchange Online message trace, collected exactly once, normalized to ECS, kept and shipped."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

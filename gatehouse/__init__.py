"""Gatehouse: self-hosted user management, wire-compatible with the Supabase clients."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]

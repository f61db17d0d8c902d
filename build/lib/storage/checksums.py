"""File checksums, one implementation for every format that records them."""

from __future__ import annotations

from csdm_agent.contract import sha256_file

__all__ = ["sha256_file"]

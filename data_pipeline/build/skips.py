"""The one exception for bad input that is skipped and counted under a short reason."""
from __future__ import annotations


class SkipItem(ValueError):
    """Bad input: the item is skipped and counted under `reason` (keep reasons short and few)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

"""The one exception for bad input that is skipped and counted under a short reason."""
from __future__ import annotations

import re

# Reasons are manifest keys that users grep and sum across builds: one spelling, snake_case.
REASON_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class SkipItem(ValueError):
    """Bad input: the item is skipped and counted under `reason` (keep reasons short and few).

    `reason` is snake_case (`unreadable_image`, `missing_field`); `detail` says which file or
    field and how to fix it."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if not REASON_PATTERN.match(reason):
            raise ValueError(f"skip reason {reason!r} must be snake_case ([a-z][a-z0-9_]*)")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

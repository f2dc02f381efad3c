"""The one error type of the public-layout readers."""
from __future__ import annotations


class LayoutError(ValueError):
    """A record that does not follow its published layout.

    `reason` is a short snake_case key (counted per reason in a build's manifest, like
    `SkipItem`); the message names the file, the record and how to fix it.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple:  # picklable (process-pool workers raise it), both arguments kept
        return (type(self), (self.reason, str(self)))

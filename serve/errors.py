"""Typed request errors: every bad input becomes `ServeError(status, code, message)`, which the
server turns into a JSON `{code, message}` with a 4xx status (never a stack trace)."""
from __future__ import annotations


class ServeError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

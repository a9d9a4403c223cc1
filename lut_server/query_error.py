"""The one error a query the table cannot answer raises, locally and through the client alike."""

from __future__ import annotations


class QueryError(ValueError):
    """A query the table cannot answer; `field` names the offending input, the message gives the allowed range."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field

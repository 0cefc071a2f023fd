"""Value types every flow validates alike: JSON's whole numbers and database ids.

The HTTP bodies (``app.api``), the search options (``app.serving``) and the job parameters
(``app.jobs``) all take them, so they live below all three.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def _whole(value: Any) -> Any:
    """JSON's integers: 5 and 5.0 (JSON Schema's "integer" admits both), never true, "5" or 5.5."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole)]
# Database ids stay below 2**53: exact in a JSON number (and in JavaScript).
MAX_DB_ID = 2**53 - 1
IdNumber = Annotated[int, Field(ge=1, le=MAX_DB_ID), BeforeValidator(_whole)]

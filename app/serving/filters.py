"""Metadata filters on search: the request syntax, its SQL, and the same rule in Python for tests.

A filter is a JSON object; every key names a metadata field and every condition must hold (AND)::

    {"color": "red"}                          equality (a string, a number or a boolean)
    {"tag": {"in": ["cat", "dog"]}}           any of these values
    {"year": {"gte": 2000, "lt": 2010}}       a numeric range (gt, gte, lt, lte)
    {"taken": {"gte": "2024-05-01"}}          a date range: ISO-8601 strings, compared as text

Values are typed as JSON types them: ``5`` matches the numbers 5 and 5.0, never the string
``"5"``; ``true`` matches only booleans; a numeric range only numbers; a date range only
strings. An item without the field never matches. Dates compare as ISO-8601 text, so stored
dates must be written the same way (``2024-05-01`` sorts before ``2024-05-01T10:00``, which
``lte: "2024-05-01"`` therefore excludes).

How a filter is applied (``app.api.routes.search``): the ids of the matching live items are
fetched, up to ``CROSSMODAL_FILTER_ID_SELECTOR_LIMIT``; when they are at most that many, the
FAISS search is restricted to them (an ID selector, or a BLAS product over just their rows on
an exact index); a broader filter is checked on the candidates the overfetch loop hydrates
anyway (one extra ``WHERE`` on a query that runs regardless).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictStr,
    WithJsonSchema,
    model_validator,
)
from sqlalchemy import ColumnElement, Float, and_, case, cast, false, func, literal, or_

from app.db.models import Item

# Keys are bound as parameters, never spliced into SQL; the pattern keeps SQLite's JSON path simple.
KEY = r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$"
MAX_CONDITIONS = 16
MAX_IN = 1000
MAX_NUMBER = 2**53  # exact in a double, in JSON and in JavaScript


def _number(value: Any) -> int | float:
    """A JSON number within +-2**53, compared as given (never coerced first: -(2**53 + 1) is refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if not (isinstance(value, int) or math.isfinite(value)) or not -MAX_NUMBER <= value <= MAX_NUMBER:
        raise ValueError(f"must be a finite number between -{MAX_NUMBER} and {MAX_NUMBER}")
    return value


Number = Annotated[
    int | float,
    PlainValidator(_number),
    WithJsonSchema({"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER}),
]
Scalar = StrictBool | Number | Annotated[StrictStr, Field(max_length=512)]
# Dates compare as text, so the pattern is the whole check (a 13th month sorts like any other string).
ISO_DATE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$"
Date = Annotated[StrictStr, Field(pattern=ISO_DATE, max_length=40)]
RANGE_OPS = ("gt", "gte", "lt", "lte")


class _Bounds(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    @model_validator(mode="after")
    def _some(self):
        if not self.bounds():
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        return self

    def bounds(self) -> dict[str, Any]:
        return {op: getattr(self, op) for op in RANGE_OPS if getattr(self, op) is not None}


class NumberRange(_Bounds):
    """Numbers between the bounds given."""

    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None


class DateRange(_Bounds):
    """ISO-8601 dates (or date-times) between the bounds given, compared as text."""

    gt: Date | None = None
    gte: Date | None = None
    lt: Date | None = None
    lte: Date | None = None


class AnyOf(BaseModel):
    """Any one of these values."""

    model_config = ConfigDict(extra="forbid")
    in_: list[Scalar] = Field(..., alias="in", min_length=1, max_length=MAX_IN)


Condition = Scalar | AnyOf | NumberRange | DateRange
Filter = Annotated[
    dict[Annotated[str, Field(pattern=KEY)], Condition],
    Field(min_length=1, max_length=MAX_CONDITIONS, json_schema_extra={"additionalProperties": False}),
]


# --- SQL ---------------------------------------------------------------------------------------


class _Field:
    """One metadata field's JSON type and value, in the dialect's own JSON functions."""

    kind: ColumnElement[Any]  # the value's JSON type name
    text: ColumnElement[Any]
    number_kinds: tuple[str, ...]
    string_kind: str
    true: str
    false: str
    raw_bool: ColumnElement[Any] | None  # PostgreSQL: the boolean as text; SQLite: None

    def __init__(self, key: str, dialect: str):
        if not re.match(KEY, key):  # validated upstream; this guards the SQLite path literal
            raise ValueError(f"bad filter key {key!r}")
        if dialect == "postgresql":
            element = Item.meta.op("->")(literal(key))
            self.kind = func.jsonb_typeof(element)
            self.text = Item.meta.op("->>")(literal(key))
            self.number_kinds, self.string_kind = ("number",), "string"
            self.true, self.false = "boolean", "boolean"
            self.raw_bool = self.text
        else:
            path = f'$."{key}"'
            self.kind = func.json_type(Item.meta, path)
            self.text = func.json_extract(Item.meta, path)
            self.number_kinds, self.string_kind = ("integer", "real"), "text"
            self.true, self.false = "true", "false"
            self.raw_bool = None

    def number(self) -> ColumnElement:
        return case((self.kind.in_(self.number_kinds), cast(self.text, Float)), else_=None)

    def string(self) -> ColumnElement:
        return case((self.kind == self.string_kind, self.text), else_=None)

    def equals(self, value: Any) -> ColumnElement:
        if isinstance(value, bool):
            if self.raw_bool is None:  # SQLite types booleans 'true' / 'false'
                return self.kind == (self.true if value else self.false)
            return and_(self.kind == "boolean", self.raw_bool == ("true" if value else "false"))
        if isinstance(value, int | float):
            return self.number() == float(value)
        return self.string() == value


def sql_clause(spec: dict[str, Any], dialect: str) -> ColumnElement:
    """The ``WHERE`` clause for a validated filter (``{key: scalar | Range}``) on ``items``."""
    parts: list[ColumnElement] = []
    for key, cond in spec.items():
        field = _Field(key, dialect)
        if isinstance(cond, AnyOf):
            parts.append(or_(*(field.equals(v) for v in cond.in_)))
        elif isinstance(cond, _Bounds):
            dates = isinstance(cond, DateRange)
            column = field.string() if dates else field.number()
            for op, v in cond.bounds().items():
                bound = v if dates else float(v)
                parts.append(
                    {"gt": column > bound, "gte": column >= bound, "lt": column < bound, "lte": column <= bound}[op]
                )
        else:
            parts.append(field.equals(cond))
    return and_(Item.meta.is_not(None), *parts) if parts else false()


# --- the same rule in Python (the tests' reference, and a check on the SQL) ----------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equals(stored: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool):
        return isinstance(stored, bool) and stored is wanted
    if _is_number(wanted):
        return _is_number(stored) and float(stored) == float(wanted)
    return isinstance(stored, str) and stored == wanted


def matches(meta: dict[str, Any] | None, spec: dict[str, Any]) -> bool:
    """Whether one item's metadata passes a validated filter, by the rules in the module docstring."""
    if not meta:
        return False
    for key, cond in spec.items():
        if key not in meta:
            return False
        stored = meta[key]
        if isinstance(cond, AnyOf):
            ok = any(_equals(stored, v) for v in cond.in_)
        elif not isinstance(cond, _Bounds):
            ok = _equals(stored, cond)
        else:
            bounds = cond.bounds()
            dates = isinstance(cond, DateRange)
            if (dates and not isinstance(stored, str)) or (not dates and not _is_number(stored)):
                return False
            value = stored if dates else float(stored)
            ops = {"gt": value.__gt__, "gte": value.__ge__, "lt": value.__lt__, "lte": value.__le__}
            ok = all(ops[op](b if dates else float(b)) for op, b in bounds.items())
        if not ok:
            return False
    return True

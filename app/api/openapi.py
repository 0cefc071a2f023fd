"""The OpenAPI schema, finished so that it describes exactly what this deployment sends and accepts.

FastAPI writes its own 422 body (``detail`` an array) on every operation; ours is ``ErrorBody``,
so that is what the schema says. Limits that come from the settings (``CROSSMODAL_MAX_K``,
``CROSSMODAL_MAX_QUERY_CHARS``, ``CROSSMODAL_MAX_QUERY_PARTS``) are written in. Request bodies that
a route parses itself (``openapi_extra``) bring their own ``$defs``: they join the components.
Every API operation may also answer 429 (over the concurrency cap) and 503 (the database or the
index is unavailable), in the same shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.config import Settings

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
ANY_TIME = {
    "422": "Invalid request",
    "429": "Too many requests in flight: retry after `Retry-After` seconds",
    "503": "The database or the index is unavailable, or nothing is indexed yet",
}


def finish_openapi(app: FastAPI, settings: Settings) -> None:
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = default()  # FastAPI's: builds the schema, keeps it as app.openapi_schema and returns it
        _limit(schema, "k", "maximum", settings.max_k)
        _limit(schema, "query", "maxLength", settings.max_query_chars)
        _hoist_defs(schema)
        _limit_model(schema, "TextPart", "text", "maxLength", settings.max_query_chars)
        _limit_model(schema, "CompositeSearchRequest", "parts", "maxItems", settings.max_query_parts)
        _errors(schema)
        _train_config(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _errors(schema: dict) -> None:
    schema.setdefault("components", {}).setdefault("schemas", {})
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            statuses = dict(ANY_TIME)
            if "requestBody" in operation:
                statuses["400"] = "The body could not be parsed (malformed JSON or multipart, nested too deeply)"
            for status, description in statuses.items():
                if status in ("400", "422") or path.startswith("/v1/"):
                    responses[status] = {
                        "description": description,
                        "content": {"application/json": {"schema": ERROR_REF}},
                    }
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)


def _train_config(schema: dict) -> None:
    """The fine-tune job's `config` is checked against JobTrainConfig; the schema carries it and its parts."""
    from app.jobs.kinds import JobTrainConfig

    own = JobTrainConfig.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema["components"]["schemas"]
    components.update(own.pop("$defs", {}))
    components["JobTrainConfig"] = own
    _swap_placeholders(schema)


def _swap_placeholders(node: Any) -> None:
    if isinstance(node, dict):
        for key, child in list(node.items()):
            if isinstance(child, dict) and "x-crossmodal-schema" in child:
                node[key] = {"$ref": f"#/components/schemas/{child['x-crossmodal-schema']}"}
            else:
                _swap_placeholders(child)
    elif isinstance(node, list):
        for child in node:
            _swap_placeholders(child)


def _hoist_defs(schema: dict) -> None:
    """The ``$defs`` of the request bodies written by hand (their refs point at the components) moved there."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                for name, definition in media.get("schema", {}).pop("$defs", {}).items():
                    components.setdefault(name, definition)


def _limit_model(schema: dict, model: str, name: str, keyword: str, value: int) -> None:
    """``keyword: value`` on property ``name`` of the component ``model`` and of inline schemas titled so."""

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            properties = node.get("properties")
            if node.get("title") == model and isinstance(properties, dict) and isinstance(properties.get(name), dict):
                properties[name][keyword] = value
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    visit(schema)


def _limit(node: Any, name: str, keyword: str, value: int) -> None:
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict) and isinstance(properties.get(name), dict):
            properties[name][keyword] = value
        for child in node.values():
            _limit(child, name, keyword, value)
    elif isinstance(node, list):
        for child in node:
            _limit(child, name, keyword, value)

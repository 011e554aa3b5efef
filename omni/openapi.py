"""The OpenAPI 3.1 document, built from the route table and the model's JSON Schema."""

from __future__ import annotations

from typing import Any

import msgspec

from omni import __version__
from omni.errors import PROBLEM_CLASSES
from omni.route import Route

_REF = "#/components/schemas/{name}"
_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "the offending field, when there is one"},
        "request_id": {"type": "string"},
    },
}


def _ref(kind: Any) -> dict[str, Any]:
    """A schema reference; a tuple of kinds is a response that is one of them (a merge,
    or its preview with dry_run)."""
    if isinstance(kind, tuple):
        return {"oneOf": [_ref(one) for one in kind]}
    return {"$ref": _REF.format(name=kind.__name__)}


def _kinds(kind: Any) -> tuple[Any, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def build(routes: tuple[Route, ...]) -> dict[str, Any]:
    kinds = {r.body for r in routes if r.body} | {
        one for r in routes if r.response for one in _kinds(r.response)
    }
    _, components = msgspec.json.schema_components(
        sorted(kinds, key=lambda k: k.__name__), ref_template=_REF
    )
    components["Problem"] = _PROBLEM_SCHEMA
    titles = {cls.status: cls for cls in PROBLEM_CLASSES}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{route.handler.__name__}",
            "tags": [route.tag],
        }
        if route.params:
            op["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "description": p.description,
                    "required": p.required or p.where == "path",
                    "schema": p.schema,
                }
                for p in route.params
            ]
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(route.body)}},
            }
        ok: dict[str, Any] = {"description": "success"}
        if route.response is not None:
            ok["content"] = {"application/json": {"schema": _ref(route.response)}}
        if route.etag:
            ok["headers"] = {"ETag": {"schema": {"type": "string"}, "description": "version"}}
        responses: dict[str, Any] = {str(route.status): ok}
        if route.status == 201:
            responses["200"] = {**ok, "description": "already stored: the stored one"}
        if route.etag and route.method == "GET":
            responses["304"] = {"description": "not modified (If-None-Match)"}
        # Any route can meet a Redis that is away, or a process at its in-flight limit.
        statuses = set(route.errors) | ({401, 403} if route.role else set()) | {500, 503}
        for status in sorted(statuses):
            cls = titles.get(status)
            responses[str(status)] = {
                "description": cls.title if cls else "Internal error",
                "content": {
                    "application/problem+json": {"schema": {"$ref": _REF.format(name="Problem")}}
                },
            }
            if status == 503:
                responses[str(status)]["headers"] = {
                    "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
                }
        if route.role:
            op["security"] = [{"apiKey": []}]
            op["x-omni-role"] = route.role
        op["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "omni",
            "version": __version__,
            "description": "Omnichannel conversation continuity: one customer context across "
            "channels. API keys carry a role: bot < agent < admin.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }

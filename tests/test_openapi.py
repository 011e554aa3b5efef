"""/openapi.json: an OpenAPI 3.1 document of every route, self-contained."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from omni.routes import all_routes

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
async def document(client: TestClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    data: dict[str, Any] = await response.json()
    return data


def _refs(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield where, value
            else:
                yield from _refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _refs(value, f"{where}/{index}")


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), ref
        assert part in node, f"{ref}: no {part!r}"
        node = node[part]
    return node


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def test_it_is_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"]
    assert document["info"]["version"]
    assert document["components"]["securitySchemes"]


def test_every_route_is_documented_and_nothing_else(document: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in _operations(document)}
    served = {(r.method, r.path) for r in all_routes()}
    assert documented == served


def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    refs = list(_refs(document))
    assert refs
    for where, ref in refs:
        target = _resolve(document, ref)
        assert isinstance(target, dict), (where, ref)


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids))


def test_every_v1_route_documents_401_and_403_problems(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        if not path.startswith("/v1/"):
            continue
        assert op.get("security"), (method, path)
        for status in ("401", "403"):
            response = op["responses"].get(status)
            assert response, (method, path, status)
            schema = response["content"]["application/problem+json"]["schema"]
            problem = _resolve(document, schema["$ref"])
            assert set(problem["required"]) >= {"type", "title", "status", "detail"}


def test_path_parameters_and_bodies_are_described(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        in_path = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert declared == in_path, (method, path)
        # Actions on a resource (retry, undo) carry no body; everything else that writes does.
        action = path.endswith(("/retry", "/undo"))
        if method in ("POST", "PUT", "PATCH") and path.startswith("/v1/") and not action:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert _resolve(document, schema["$ref"]).get("type") == "object", (method, path)


def test_documented_errors_include_what_the_api_answers(document: dict[str, Any]) -> None:
    ops = {(m, p): op for m, p, op in _operations(document)}
    expect = {
        ("POST", "/v1/messages"): {"400", "413", "415", "422"},
        ("PUT", "/v1/customers/{id}/cart"): {"404", "412", "422", "428"},
        ("PATCH", "/v1/customers/{id}/facts"): {"404", "412", "422"},
        ("POST", "/v1/customers/{id}/identities"): {"404", "409", "422"},
        ("GET", "/v1/customers/{id}/history"): {"400", "404"},
        ("GET", "/v1/context"): {"400", "404", "422"},
    }
    for key, statuses in expect.items():
        assert statuses <= set(ops[key]["responses"]), key

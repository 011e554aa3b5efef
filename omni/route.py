"""A route as the route table declares it: what it answers and what the OpenAPI
document says of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from omni.auth import Handler
from omni.model import PAGE_DEFAULT, PAGE_MAX
from omni.settings import Role


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["query", "path", "header"]
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


PAGE_LIMIT = Param(
    "limit",
    "query",
    f"page size, 1 to {PAGE_MAX} (default {PAGE_DEFAULT})",
    {"type": "integer", "minimum": 1, "maximum": PAGE_MAX},
)  # every paged route's `limit`


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    role: Role | None = None
    body: Any = None
    body_required: bool = True  # False: an empty body means the body's defaults
    response: Any = None
    status: int = 200
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    etag: bool = False

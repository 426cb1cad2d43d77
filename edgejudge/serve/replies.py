"""The answers of ``edgejudge serve``: JSON as ``judge --json`` writes it, the status of each error (the
contract's table), the error object of a library error, the two exceptions of the HTTP side
(``SchemaViolation``: 422; ``ClientGone``: the client disconnected) and the OpenAPI request-body entry of
a route that reads its own body.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from ..errors import (
    ContextOverflowError,
    EdgeJudgeError,
    EngineError,
    ImageTooLargeError,
    InputError,
    InvalidImageError,
    PolicyError,
    RubricError,
)
from .limits import error_body
from .schema import UnsupportedMediaType
from .worker import QueueFullError, ShuttingDownError

__all__ = [
    "SchemaViolation",
    "ClientGone",
    "json_text",
    "json_response",
    "status_of",
    "error_of",
    "request_body",
]


class SchemaViolation(Exception):  # noqa: N818 - the 422 of a body that breaks the schema
    """A request body that breaks its schema; ``error`` says how, in the CLI's words."""

    def __init__(self, error: InputError) -> None:
        super().__init__(error.message)
        self.error = error


class ClientGone(Exception):  # noqa: N818 - the client disconnected before its answer
    """The client went away while its job waited or ran; the job was cancelled."""


def _safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    return value


def json_text(data: Any) -> str:
    """JSON as ``judge --json`` writes it: non-finite numbers null; text that cannot be UTF-8 escaped."""
    text = json.dumps(_safe(data), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(_safe(data), ensure_ascii=True)
    return text


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json_text(data), status_code=status, headers=headers, media_type="application/json")


def status_of(err: BaseException) -> int:
    """The HTTP status of an error (the contract's table)."""
    if isinstance(err, QueueFullError):
        return 429
    if isinstance(err, (ShuttingDownError, EngineError)):
        return 503
    if isinstance(err, ImageTooLargeError):
        return 413
    if isinstance(err, UnsupportedMediaType):
        return 415
    if isinstance(err, (InputError, InvalidImageError, RubricError, PolicyError, ContextOverflowError)):
        return 400
    if isinstance(err, EdgeJudgeError):
        return 400
    return 500


def error_of(err: EdgeJudgeError) -> dict[str, Any]:
    """The error object (the inner part of the body) of a library error."""
    return error_body(type(err).__name__, str(err), err.hint)["error"]


def request_body(model: type[Any], *, multipart: bool) -> dict[str, Any]:
    """The ``openapi_extra`` naming a route's request body (the routes read the body themselves)."""
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    }
    if multipart:
        props: dict[str, Any] = {name: {"type": "string"} for name in model.model_fields}
        props["image"] = {"type": "string", "format": "binary", "description": "The image file."}
        required = [n for n, f in model.model_fields.items() if f.is_required()]
        content["multipart/form-data"] = {
            "schema": {"type": "object", "properties": props, "required": required}
        }
    return {"requestBody": {"required": True, "content": content}}

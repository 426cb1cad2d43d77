"""Multipart form-data read in memory (python-multipart's streaming parser over the already size-limited
body): nothing is spooled to a temporary file, unlike Starlette's ``UploadFile``.

``parse_form(body, content_type, model)`` → (the form's values for the request ``model``, the image file's
bytes or None). Values are text; each becomes what the model's field takes: a setting's number or flag as
JSON reads it (``"0.5"``, ``"true"``), a list field from repeated parts (or one JSON array), a rubric or
policy from a built-in name or a JSON object's text. The ``image`` part may be a file (its bytes) or text
(base64, as in a JSON body); a file's name is the ``image_name`` when the form gives none.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import InputError

__all__ = ["parse_form", "MAX_PARTS"]

#: The most parts a form may have.
MAX_PARTS = 256


class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()
        self._field = bytearray()
        self._value = bytearray()


def _split(body: bytes, boundary: bytes) -> list[_Part]:
    parts: list[_Part] = []

    def begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise InputError(f"the form has more than {MAX_PARTS} parts", hint="send fewer fields")
        parts.append(_Part())

    def header_field(data: bytes, start: int, end: int) -> None:
        parts[-1]._field += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        parts[-1]._value += data[start:end]

    def header_end() -> None:
        part = parts[-1]
        part.headers[bytes(part._field).lower()] = bytes(part._value)
        part._field.clear()
        part._value.clear()

    def data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    callbacks: Any = {
        "on_part_begin": begin,
        "on_header_field": header_field,
        "on_header_value": header_value,
        "on_header_end": header_end,
        "on_part_data": data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # inside: it refuses a boundary over 256 bytes
        parser.write(body)
        parser.finalize()
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - python-multipart's errors on a malformed body
        raise InputError(
            f"the multipart body is malformed ({err})", hint="send a valid form-data body"
        ) from None
    return parts


def _text(part: _Part, name: str) -> str:
    try:
        return bytes(part.data).decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"form field '{name}' is not UTF-8 text (byte {err.start}: {err.reason})", hint="send UTF-8 text"
        ) from None


def _shape(annotation: Any) -> tuple[bool, set[type]]:
    """(is a list, the scalar types) of a model field's annotation."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is list:
        return True, _shape(args[0])[1] if args else set()
    if origin is dict:
        return False, {dict}
    if args:
        is_list, kinds = False, set()
        for arg in args:
            sub_list, sub = _shape(arg)
            is_list = is_list or sub_list
            kinds |= sub
        return is_list, kinds
    return False, {annotation} if isinstance(annotation, type) else set()


def _value(text: str, kinds: set[type]) -> Any:
    if kinds & {int, float, bool} or (dict in kinds and text.lstrip().startswith("{")):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text  # the schema then says what it must be
    return text


def _array(text: str) -> list[Any] | None:
    """``text`` as a JSON array, or None when it is not one (then it is one item of the list)."""
    if not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def parse_form(body: bytes, content_type: str, model: Any) -> tuple[dict[str, Any], bytes | None]:
    """See the module docstring. ``InputError`` for a form without a boundary, a malformed one, a part
    without a name, or a text that is not UTF-8."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InputError("the multipart content type has no boundary", hint="send a valid form-data body")
    values: dict[str, Any] = {}
    image: bytes | None = None
    filename = ""
    for part in _split(body, boundary):
        _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise InputError("a form part has no name", hint="name every part (Content-Disposition)")
        if name == "image" and b"filename" in disposition:
            image = bytes(part.data)
            filename = (
                disposition[b"filename"].decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
            )
            continue
        field = model.model_fields.get(name)
        if field is None:
            values[name] = _text(part, name)  # the schema refuses it by name
            continue
        is_list, kinds = _shape(field.annotation)
        text = _text(part, name)
        if is_list:
            whole = _array(text) if name not in values else None
            if whole is not None:
                values[name] = whole  # the whole list as one JSON array
            else:
                values.setdefault(name, []).append(_value(text, kinds))
        else:
            values[name] = _value(text, kinds)
    if filename and "image_name" not in values and "image_name" in model.model_fields:
        values["image_name"] = filename
    return values, image

"""The request bodies of ``edgejudge serve`` (pydantic models with OpenAPI examples) and their conversion
to the library's records.

``JudgeRequest``, ``BatchRequest`` and ``PolicyRequest`` are the JSON bodies of ``/v1/judge``,
``/v1/judge/batch`` and ``/v1/judge/policy`` (strict types: a number is never read from text, unknown
fields are refused). ``parse_body`` reads one from a request's bytes: JSON, or multipart form-data parsed
in memory from the already size-limited body (``formdata``; nothing is spooled to disk). Conversions, each
raising the library's own errors with the CLI's messages: ``image_bytes`` (base64 or a data URL),
``decode_image`` (``images.load_image`` with the server's pixel limit, then ``Judge.fit``), ``rubric_of``
(a built-in name or an inline rubric object; never a file on the server), ``policy_of`` (a built-in name
or an inline policy object, read by ``policy.parse_policy``), ``generation`` (each setting the request
leaves out is the server's default; every value checked by ``settings.check``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError, InvalidImageError, PolicyError, RubricError
from ..settings import SETTING_NAMES, GenerationSettings, check
from .formdata import parse_form

if TYPE_CHECKING:
    from ..engine.base import GenerationParams
    from ..images import FittedImage
    from ..judge import Judge
    from ..policy import Policy
    from ..rubric import Rubric

__all__ = [
    "JudgeRequest",
    "BatchRequest",
    "UnsupportedMediaType",
    "PolicyRequest",
    "DEFAULT_RUBRIC",
    "SETTING_NAMES",
    "MAX_NAME_CHARS",
    "shown",
    "parse_body",
    "image_bytes",
    "decode_image",
    "rubric_of",
    "policy_of",
    "generation",
    "validation_error",
]

#: The rubric of a request that names none (``edgejudge judge``'s default).
DEFAULT_RUBRIC = "vqa-helpfulness"
#: The longest image label, rubric or policy name a request may give (each is repeated in the answer).
MAX_NAME_CHARS = 255
#: The most characters of an unknown name an error message shows.
_SHOWN_CHARS = 64
_Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
#: A 1x1 PNG, the image of the examples.
_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
_IMAGE_HELP = "The image file's bytes in base64, or a data:image/...;base64, URL."
_RUBRIC_HELP = (
    "A built-in rubric name (GET /v1/rubrics), or an inline rubric object with the keys a rubric file "
    "has: criteria, score1 … score5 (or score1_description …), optional name."
)
_INLINE_RUBRIC: dict[str, Any] = {
    "name": "caption-accuracy",
    "criteria": "Does the caption describe the image accurately?",
    **{f"score{k}": text for k, text in enumerate(("Wrong", "Mostly wrong", "Partly", "Mostly", "Exact"), 1)},
}


class _Settings(BaseModel):
    """The generation settings (null or absent: the server's default)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    temperature: float | None = Field(None, description="Sampling temperature (0 = greedy).")
    top_p: float | None = Field(None, description="Nucleus sampling threshold.")
    repeat_penalty: float | None = Field(None, description="Repetition penalty (1 = none).")
    max_tokens: int | None = Field(None, description="Generation budget in tokens.")
    seed: int | None = Field(None, description="Random seed; several samples use seed, seed+1, …")
    samples: int | None = Field(None, description="Generations drawn; the verdict takes the majority.")
    grammar: bool | None = Field(None, description="Constrain the output to feedback then [RESULT] d.")


class _Image(_Settings):
    image: str = Field(description=_IMAGE_HELP)
    image_name: str = Field(
        "image", max_length=MAX_NAME_CHARS, description="A label for the image (in the verdict and messages)."
    )
    reference: str | None = Field(None, description="A reference answer that would score 5.")


class JudgeRequest(_Image):
    """One response to one image, judged against one rubric."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image": _PNG,
                    "image_name": "cat.png",
                    "instruction": "What animal is it?",
                    "response": "A tabby cat.",
                    "reference": "A cat.",
                    "rubric": "vqa-helpfulness",
                    "temperature": 0,
                    "max_tokens": 256,
                },
                {"image": _PNG, "instruction": "Caption it", "response": "A cat.", "rubric": _INLINE_RUBRIC},
            ]
        }
    )

    instruction: str = Field(description="The question or task given about the image.")
    response: str = Field(description="The response to judge.")
    rubric: _Name | dict[str, Any] | None = Field(None, description=_RUBRIC_HELP)
    stream: bool = Field(False, description="Stream the feedback as server-sent events.")


class BatchRequest(_Image):
    """Several responses (optionally against several rubrics) about one image, decoded together."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image": _PNG,
                    "instruction": "What animal is it?",
                    "responses": ["A cat.", "A dog."],
                    "rubrics": ["vqa-helpfulness", "visual-grounding"],
                    "temperature": 0,
                }
            ]
        }
    )

    instruction: str = Field(description="The question or task given about the image.")
    responses: list[str] = Field(min_length=1, max_length=64, description="The responses to judge.")
    rubric: _Name | dict[str, Any] | None = Field(None, description="One rubric for every response.")
    rubrics: list[_Name | dict[str, Any]] | None = Field(
        None, min_length=1, max_length=16, description="Several rubrics: each response against each."
    )


class PolicyRequest(_Image):
    """One response judged against every rule of a policy."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image": _PNG,
                    "image_name": "listing.jpg",
                    "response": "Barely used bike, 80 EUR",
                    "policy": "marketplace-listing",
                    "temperature": 0,
                }
            ]
        }
    )

    response: str = Field(description="The response (the content) to judge.")
    instruction: str | None = Field(None, description="The task; default: the rule's or the policy's.")
    policy: _Name | dict[str, Any] = Field(
        description="A built-in policy name (GET /v1/policies) or an inline policy object (as a policy "
        "JSON file holds it)."
    )
    review_band: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[low, high]: a p_pass strictly inside needs review."
    )


# -- reading a body ------------------------------------------------------------------------------------
class UnsupportedMediaType(InputError):
    """A request body that is neither JSON nor multipart form-data (HTTP 415)."""


def parse_body(model: type[BaseModel], body: bytes, content_type: str) -> tuple[Any, bytes | None]:
    """The request ``model`` from ``body`` and, for a multipart upload, the image file's bytes (None for
    JSON: the image is in the model). ``UnsupportedMediaType`` for another content type;
    ``pydantic.ValidationError`` for a body that breaks the schema."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
        return model.model_validate_json(body), None
    if kind == "multipart/form-data":
        values, image = parse_form(body, content_type, model)
        if image is not None:
            values["image"] = ""
        return model.model_validate(values), image
    raise UnsupportedMediaType(
        f"unsupported content type {kind or '(none)'!r}",
        hint="send application/json (or multipart/form-data with the image as a file part)",
    )


_WORDS = {"string": "text", "int": "an integer", "float": "a number", "bool": "true or false"}


def validation_error(err: ValidationError, model: type[BaseModel] | None = None) -> InputError:
    """The first problem of a body that breaks the schema, as one ``InputError`` in the CLI's words:
    a generation setting's message is ``settings.check``'s, a text field's ``inputs.check_texts``'."""
    first = err.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    name = loc[0] if loc else ""
    kind = str(first.get("type", ""))
    value = first.get("input")
    where = ".".join(loc)
    if kind == "json_invalid":
        return InputError(
            f"the request body is not valid JSON ({first.get('msg')})", hint="send a JSON object"
        )
    if kind == "missing":
        hint = None
        if model is not None and name in model.model_fields:
            hint = f"give {name}: {model.model_fields[name].description}"
        return InputError(f"the request has no '{where}'", hint=hint, about=name)
    if kind == "extra_forbidden":
        known = ", ".join(model.model_fields) if model is not None else ""
        return InputError(f"unknown field '{where}'", hint=f"the fields are: {known}" if known else None)
    if kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
        return InputError(
            f"the request body must be a JSON object, got {_type(value)}", hint="send an object"
        )
    if kind in ("too_short", "too_long") and len(loc) == 1:
        return _length_error(name, value, first.get("ctx") or {})
    if kind == "string_too_long":
        most = (first.get("ctx") or {}).get("max_length")
        size = f"{len(value):,}" if isinstance(value, str) else "too many"
        return InputError(
            f"{where} is {size} characters long, more than {most}",
            hint=f"give a shorter {name}",
            about=name,
        )
    if name in SETTING_NAMES and len(loc) == 1:
        try:
            check(name, value)
        except InputError as refused:
            return refused
    if kind == "string_type":
        return InputError(f"{where} must be text, got {_type(value)}", hint=f"pass the {name} as a string")
    if kind.endswith("_type") and kind.split("_")[0] in _WORDS:
        return InputError(f"{where} must be {_WORDS[kind.split('_')[0]]}, got {_type(value)}", about=name)
    return InputError(f"{where or 'the request'}: {first.get('msg')}", about=name)


def _length_error(name: str, value: Any, ctx: dict[str, Any]) -> InputError:
    """A list with too few or too many items (``review_band``: ``decision.check_band``'s words)."""
    if name == "review_band":
        from ..decision import check_band

        try:
            check_band(value)
        except PolicyError as err:
            return InputError(err.message, hint="give it as [low, high], e.g. [0.25, 0.75]", about=name)
    count = ctx.get("actual_length", len(value) if isinstance(value, list) else "?")
    if "min_length" in ctx:
        bound = f"at least {ctx['min_length']}"
    else:
        bound = f"at most {ctx.get('max_length')}"
    return InputError(
        f"{name} must hold {bound} item(s), got {count}", hint=f"send {bound} {name}", about=name
    )


def _type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "text"}
    return names.get(type(value), "a list" if isinstance(value, list) else "an object")


# -- the records -----------------------------------------------------------------------------------------
_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)
_B64_HINT = "send the image file's bytes in base64 (or a data:image/...;base64, URL)"


def image_bytes(value: str, name: str) -> bytes:
    """The image file's bytes from base64 text or a ``data:image/...;base64,`` URL (``InvalidImageError``
    naming the image for anything else)."""
    text = value.strip()
    match = _DATA_URL.match(text)
    if match:
        text = text[match.end() :]
    elif text[:5].lower() == "data:":
        raise InvalidImageError(f"image is a data URL without base64 image data: {name}", hint=_B64_HINT)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidImageError(f"image is not valid base64 ({err}): {name}", hint=_B64_HINT) from None


def decode_image(data: bytes, name: str, judge: Judge, max_pixels: int) -> FittedImage:
    """Decode (the format allow-list, ``max_pixels``) and fit the image as the judge sees it."""
    from ..images import load_image

    return judge.fit(load_image(data, name=name, max_pixels=max_pixels), name=name)


def shown(name: str) -> str:
    """A name as a message shows it: at most ``_SHOWN_CHARS`` characters."""
    return name if len(name) <= _SHOWN_CHARS else name[:_SHOWN_CHARS] + "…"


def rubric_of(value: str | dict[str, Any] | None) -> Rubric:
    """The rubric a request names: a built-in name (as ``rubric.load_rubric`` normalises it) or an
    inline object (``rubric_from_mapping``); ``RubricError`` otherwise. Files on the server are never read."""
    from ..rubric import _normalise_name, builtin_rubrics, rubric_from_mapping

    if value is None:
        value = DEFAULT_RUBRIC
    if isinstance(value, dict):
        return rubric_from_mapping(value, name="inline", source=None)
    library = builtin_rubrics()
    found = library.get(_normalise_name(value))
    if found is None:
        raise RubricError(
            f"unknown rubric '{shown(value)}'; available: {', '.join(library)}",
            hint="pass a built-in name (GET /v1/rubrics) or an inline rubric object",
        )
    return found


def policy_of(value: str | dict[str, Any]) -> Policy:
    """The policy a request names: a built-in name or an inline object (``policy.parse_policy`` of its
    JSON text; ``sha256`` that text's); ``PolicyError`` otherwise. Files on the server are never read."""
    from ..policy import builtin_policies, parse_policy
    from ..rubric import _normalise_name

    if isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return parse_policy(
            text, suffix=".json", source="the request's policy", sha256=digest, rubric_files=False
        )
    library = builtin_policies()
    found = library.get(_normalise_name(value))
    if found is None:
        raise PolicyError(
            f"unknown policy '{shown(value)}'; built-in: {', '.join(library)}",
            hint="pass a built-in name (GET /v1/policies) or an inline policy object",
            about="policy",
        )
    return found


def generation(request: _Settings, defaults: GenerationSettings) -> tuple[GenerationParams, int]:
    """(params, samples) of a request: each setting it leaves out is ``defaults``'; every value is checked
    by ``settings.check`` (an ``InputError`` naming the setting)."""
    from ..engine.base import GenerationParams

    values: dict[str, Any] = {}
    for name in SETTING_NAMES:
        given = getattr(request, name, None)
        values[name] = check(name, getattr(defaults, name) if given is None else given)
    params = GenerationParams(
        temperature=float(values["temperature"]),
        top_p=float(values["top_p"]),
        repeat_penalty=float(values["repeat_penalty"]),
        max_tokens=values["max_tokens"],
        seed=values["seed"],
        constrained=values["grammar"],
    )
    return params, int(values["samples"])

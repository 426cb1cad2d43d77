"""The wire of ``edgejudge.Client``: request bodies in, records and errors out, one HTTP exchange at a time.

- bodies: ``image_field`` (a path's file bytes, bytes as given, a PIL image or a ``FittedImage`` as a
  lossless PNG through ``images.png_bytes``; base64), ``rubric_field`` (a built-in name as is, a
  ``Rubric`` or a rubric file inline), ``policy_field`` (a built-in name as is, a ``Policy`` or a policy
  file inline, as a policy file holds it), ``settings_fields`` (``GenerationParams`` and keyword settings
  under the names a verdict's ``settings`` uses, each checked by ``settings.check``);
- ``Wire``: one ``httpx.Client`` to the server. A 429 is retried honouring ``Retry-After`` (at most
  ``MAX_RETRY_AFTER_S`` per wait, ``retries`` times); a request that cannot connect is retried for
  ``CONNECT_RETRY_S``; a ``POST`` that timed out is never sent again. Server-sent events are read with
  their event names (``text``, ``verdict``, ``error``);
- ``server_error``: an error body ``{"error": {"type", "message", "hint"}}`` as the ``EdgeJudgeError`` class
  its ``type`` names (``InputError`` for an unknown type of a 4xx, ``ServerUnavailableError`` of a 429 or
  5xx), with the server's message and hint.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from . import errors
from .errors import EdgeJudgeError, EngineError, InputError, InvalidImageError, ServerUnavailableError
from .settings import SETTING_NAMES, check

if TYPE_CHECKING:
    from .engine.base import GenerationParams
    from .policy import Policy
    from .rubric import Rubric

__all__ = [
    "MAX_RETRY_AFTER_S",
    "CONNECT_RETRY_S",
    "Wire",
    "image_field",
    "rubric_field",
    "policy_field",
    "settings_fields",
    "server_error",
]

#: The longest wait a ``Retry-After`` may ask for before a 429 is tried again.
MAX_RETRY_AFTER_S = 30.0
#: How long a server that refuses connections is tried again (a server still starting, or restarting).
CONNECT_RETRY_S = 2.0
_SERVE_HINT = "check that edgejudge serve is running at that address"


# -- bodies ------------------------------------------------------------------------------------------------
def image_field(image: Any, image_name: str | None) -> tuple[str, str | None]:
    """``(base64 of the image file's bytes, the image's label or None)`` for anything ``Judge`` takes as an
    image: a path (the file's bytes, read as the CLI reads them; labelled with the file's name), the bytes
    of a file, a PIL image or a ``FittedImage`` (a lossless PNG of its pixels). ``InvalidImageError``
    otherwise."""
    from .images import MAX_FILE_BYTES, FittedImage, ImageInput, load_image, png_bytes

    name = image_name
    if isinstance(image, (bytearray, memoryview)):
        image = bytes(image)
    if isinstance(image, (str, Path)):
        from ._fs import read_regular, user_path

        path = user_path(image, what="image path", error=InvalidImageError)
        try:  # the file's bytes as the CLI reads them (regular file, size limit, never a hang on a FIFO)
            data = read_regular(
                path, label=str(path), what="image", max_bytes=MAX_FILE_BYTES, error=InvalidImageError
            )
        except InvalidImageError:
            if _is_dir(path):
                raise InvalidImageError(
                    f"image path is a directory: {path}", hint="pass an image file, not a folder"
                ) from None
            raise
        name = name or path.name
    elif isinstance(image, bytes):
        data = image
    elif isinstance(image, FittedImage):
        data = png_bytes(image.rgb, image.width, image.height)
        name = name or image.name
    elif isinstance(image, ImageInput):  # a PIL image: validated and oriented as the judge would
        rgb = load_image(image, name=name)  # type: ignore[arg-type]
        data = png_bytes(rgb.tobytes(), rgb.width, rgb.height)
    else:
        raise InvalidImageError(
            "an image must be a path, the file's bytes, a PIL image or a FittedImage, "
            f"not {type(image).__name__}",
            hint="pass the image file's path",
        )
    return base64.b64encode(data).decode("ascii"), name


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _looks_like_name(text: str) -> bool:
    return not ("/" in text or text.lower().endswith((".toml", ".json")) or text.startswith((".", "~")))


def rubric_field(rubric: Rubric | str | Path, notes: list[str] | None = None) -> str | dict[str, Any]:
    """A rubric as a request names it: a built-in name as is (the server knows its built-ins); a ``Rubric``
    or a rubric file (read here, ``rubric.load_rubric``: the server never reads files) as an object, its
    texts cleaned as ``Judge`` cleans them (``inputs.clean_rubric``; the notes added to ``notes``)."""
    from .inputs import clean_rubric
    from .rubric import Rubric, load_rubric

    if isinstance(rubric, str) and _looks_like_name(rubric) and not Path(rubric).is_file():
        return rubric  # the server's built-in (or its "unknown rubric" error)
    loaded = rubric if isinstance(rubric, Rubric) else load_rubric(rubric)
    return clean_rubric(loaded, [] if notes is None else notes).to_dict()


def policy_field(policy: Policy | str | Path) -> str | dict[str, Any]:
    """A policy as a request names it: a built-in name as is, a ``Policy`` or a policy file (read here,
    ``policy.load_policy``) inline, as a policy file holds it (``policy_to_toml`` read back)."""
    from .policy import Policy, load_policy, policy_to_toml
    from .rubric import parse_rubric_text

    if isinstance(policy, str) and _looks_like_name(policy) and not Path(policy).is_file():
        return policy
    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    return dict(parse_rubric_text(policy_to_toml(loaded), ".toml", loaded.source, unwrap=False))


def settings_fields(params: GenerationParams | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The generation settings of a request: ``params`` (all of its values; None: none) overridden by
    ``settings`` (names as a verdict's ``settings`` has them), each checked by ``settings.check``; a
    setting left out is the server's default."""
    values: dict[str, Any] = {}
    if params is not None:
        values.update(
            temperature=params.temperature,
            top_p=params.top_p,
            repeat_penalty=params.repeat_penalty,
            max_tokens=params.max_tokens,
            seed=params.seed,
            grammar=params.constrained,
        )
    for name, value in settings.items():
        if name not in SETTING_NAMES:
            raise InputError(
                f"unknown setting '{name}'", hint=f"the settings are: {', '.join(SETTING_NAMES)}"
            )
        values[name] = value
    out = {}
    for name, value in values.items():
        if value is None:  # the server's default (a seed of None: the server's seed)
            continue
        check(name, value)
        out[name] = float(value) if name in ("temperature", "top_p", "repeat_penalty") else value
    return out


# -- errors ------------------------------------------------------------------------------------------------
def server_error(error: Any, status: int, url: str) -> EdgeJudgeError:
    """The library error an error object of the server stands for (see the module docstring)."""
    if not isinstance(error, Mapping):
        error = {}
    message = str(error.get("message") or f"{url} answered HTTP {status}")
    hint = error.get("hint") if isinstance(error.get("hint"), str) else None
    kind = getattr(errors, str(error.get("type") or ""), None)
    if not (isinstance(kind, type) and issubclass(kind, EdgeJudgeError)):
        kind = ServerUnavailableError if status == 429 or status >= 500 else InputError
    if status == 401 and hint is None:
        hint = "pass the server's API key (api_key=, or EDGEJUDGE_SERVE_API_KEY)"
    if issubclass(kind, ServerUnavailableError):
        return kind(message, url=url, hint=hint)
    try:
        return kind(message, hint=hint)
    except TypeError:  # a class with other required arguments
        return InputError(message, hint=hint)


# -- the exchange ------------------------------------------------------------------------------------------
class Wire:
    """One connection pool to the server at ``url`` (thread-safe; ``close`` ends it)."""

    def __init__(self, url: str, *, api_key: str | None, timeout: float, retries: int) -> None:
        from .engine._http import normalize_url

        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise InputError(
                f"timeout must be a positive number of seconds, got {timeout!r}", about="timeout"
            )
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise InputError(f"retries must be an integer of at least 0, got {retries!r}", about="retries")
        try:
            self.url = normalize_url(url)
        except EngineError as err:
            raise InputError(err.message, hint="give the server's URL, e.g. http://127.0.0.1:8765") from None
        self.timeout = float(timeout)
        self.retries = retries
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            trust_env=False,  # a server on 127.0.0.1 must not go through a proxy from the environment
        )

    def get(self, path: str) -> Any:
        return self._json(self._send("GET", path, None), path)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._json(self._send("POST", path, body), path)

    def events(self, path: str, body: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
        """``POST path`` and yield each server-sent event as ``(event name, decoded data)``."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                with self._http.stream("POST", path, json=dict(body)) as response:
                    if not response.is_success:
                        response.read()
                        if self._again(response, attempt):
                            attempt += 1
                            continue
                        raise self._refused(response)
                    yield from self._read_events(response, path)
                    return
            except httpx.HTTPError as err:
                self._reconnect(err, "POST", path, started)

    def close(self) -> None:
        self._http.close()

    # -- plumbing ------------------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: Mapping[str, Any] | None) -> httpx.Response:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=None if body is None else dict(body))
            except httpx.HTTPError as err:
                self._reconnect(err, method, path, started)
                continue
            if response.is_success:
                return response
            if self._again(response, attempt):
                attempt += 1
                continue
            raise self._refused(response)

    def _again(self, response: httpx.Response, attempt: int) -> bool:
        """After a refusal: wait and say True when it is a 429 with retries left."""
        if response.status_code != 429 or attempt >= self.retries:
            return False
        from .engine._http import retry_after

        wait = retry_after(response)
        time.sleep(min(MAX_RETRY_AFTER_S, 0.5 * 2**attempt if wait is None else wait))
        return True

    def _reconnect(self, err: httpx.HTTPError, method: str, path: str, started: float) -> bool:
        """A request that got no answer: True to try again (a refused connection, for a moment); else the
        error, in library words."""
        if isinstance(err, httpx.ConnectError) and time.monotonic() - started < CONNECT_RETRY_S:
            time.sleep(0.2)
            return True
        if isinstance(err, httpx.TimeoutException) and not isinstance(err, httpx.ConnectTimeout):
            raise ServerUnavailableError(
                f"{self.url}: {method} {path} got no answer within {self.timeout:g} s",
                url=self.url,
                hint="raise the client's timeout if the server is just busy",
            ) from None
        said = " ".join(str(err).split()) or type(err).__name__
        raise ServerUnavailableError(
            f"cannot reach edgejudge serve at {self.url} ({said})", url=self.url, hint=_SERVE_HINT
        ) from None

    def _refused(self, response: httpx.Response) -> EdgeJudgeError:
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        if error is None:
            said = " ".join(response.text.split())[:200] or response.reason_phrase
            error = {"message": f"{self.url} answered HTTP {response.status_code}: {said}"}
        return server_error(error, response.status_code, self.url)

    def _json(self, response: httpx.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise EngineError(f"{self.url}{path} did not answer JSON", hint=_SERVE_HINT) from None

    def _read_events(self, response: httpx.Response, path: str) -> Iterator[tuple[str, Any]]:
        name, data = "message", list[str]()
        for line in response.iter_lines():
            if not line:
                if data:
                    yield name, self._event_data("\n".join(data), path)
                name, data = "message", list[str]()
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            yield name, self._event_data("\n".join(data), path)

    def _event_data(self, text: str, path: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            raise EngineError(
                f"{self.url}{path} streamed an event that is not JSON", hint=_SERVE_HINT
            ) from None

"""``Client``: the judge behind ``edgejudge serve``, over HTTP, answering with the in-process judge's records.

::

    from edgejudge import Client
    with Client("http://127.0.0.1:8765") as judge:          # or: Judge.from_files(...) as judge
        verdict = judge.evaluate("cat.jpg", instruction="...", response="...", rubric="vqa-helpfulness")

``evaluate``, ``evaluate_many`` and ``evaluate_policy`` take exactly ``Judge``'s arguments, so code switches
between local and remote judging with one line; ``judge``, ``judge_many`` and ``judge_policy`` are the same
with the generation settings as keywords (``temperature=0``, ``max_tokens=256``...) and the server's default
rubric. Every answer is read back with ``Verdict.from_dict`` / ``PolicyVerdict.from_dict``; every error the
server answers is raised as the library's own error class its body names, with the server's message (the
CLI's) and hint (``_client_wire``). Settings a call leaves out are the server's defaults (its flags), so
``evaluate(params=None)`` judges with the server's settings, not ``GenerationParams()``'s; a seed of None is
the server's seed.

The API key is ``api_key`` or, when None, ``EDGEJUDGE_SERVE_API_KEY`` (``config.serve_api_key``). A full
queue (429) is retried honouring ``Retry-After`` ``retries`` times; a server that cannot be reached is a
``ServerUnavailableError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._client_wire import Wire, image_field, policy_field, rubric_field, server_error, settings_fields
from ._closing import Closing
from .decision import DEFAULT_REVIEW_BAND
from .errors import EdgeJudgeError, EngineError, InputError
from .settings import check
from .verdict import PolicyVerdict, Verdict

if TYPE_CHECKING:
    from .engine.base import GenerationParams, TokenCallback
    from .images import ImageInput
    from .policy import Policy
    from .rubric import Rubric

__all__ = ["Client", "DEFAULT_TIMEOUT_S"]

#: How long a request may take by default (a judgment on a busy server queues behind others).
DEFAULT_TIMEOUT_S = 600.0


class Client(Closing):
    """A connection to ``edgejudge serve`` at ``url`` (``http://HOST:PORT``). A context manager;
    ``close()`` ends the connections. Thread-safe: several threads may judge through one client."""

    def __init__(
        self, url: str, api_key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S, retries: int = 3
    ) -> None:
        from .config import serve_api_key

        self._wire = Wire(url, api_key=api_key or serve_api_key(), timeout=timeout, retries=retries)
        self.url = self._wire.url

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- the service -------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` (a draining server's 503 is ``ServerUnavailableError``)."""
        return dict(self._wire.get("/healthz"))

    def model(self) -> dict[str, Any]:
        """``GET /v1/model``: the served judge (name, engine, quant, sha256, context, image size...)."""
        return dict(self._wire.get("/v1/model"))

    def rubrics(self) -> list[dict[str, Any]]:
        """``GET /v1/rubrics``: the server's built-in rubrics, as rubric objects with their ``name``."""
        return list(self._wire.get("/v1/rubrics")["rubrics"])

    def policies(self) -> list[dict[str, Any]]:
        """``GET /v1/policies``: the server's built-in policies."""
        return list(self._wire.get("/v1/policies")["policies"])

    # -- judging, settings as keywords ----------------------------------------------------------------------
    def judge(
        self,
        image: ImageInput,
        *,
        instruction: str,
        response: str,
        rubric: Rubric | str | Path | None = None,
        reference: str | None = None,
        samples: int = 1,
        params: GenerationParams | None = None,
        image_name: str | None = None,
        on_text: TokenCallback | None = None,
        **settings: Any,
    ) -> Verdict:
        """Judge one response to one image (``rubric`` None: the server's default rubric). ``settings`` are
        generation settings by name (``temperature``, ``top_p``, ``repeat_penalty``, ``max_tokens``,
        ``seed``, ``grammar``), over ``params``. ``on_text`` streams the feedback as it is generated."""
        body = self._body(image, image_name, samples, params, settings)
        body.update(instruction=instruction, response=response, reference=reference)
        if rubric is not None:
            body["rubric"] = rubric_field(rubric)
        if on_text is None:
            return _verdict(self._wire.post("/v1/judge", body), self.url)
        return self._streamed(body, on_text)

    def judge_each(
        self,
        image: ImageInput,
        *,
        instruction: str,
        responses: Sequence[str],
        rubric: Rubric | str | Path | None = None,
        rubrics: Sequence[Rubric | str | Path] | None = None,
        reference: str | None = None,
        samples: int = 1,
        params: GenerationParams | None = None,
        image_name: str | None = None,
        **settings: Any,
    ) -> list[Verdict | EdgeJudgeError]:
        """Judge several responses to one image in one request (``/v1/judge/batch``), each against
        ``rubric`` or against each of ``rubrics``: in order (for each response, each rubric), each a
        ``Verdict`` or the ``EdgeJudgeError`` that item got (one bad item never costs the others)."""
        if isinstance(responses, str):
            raise InputError("responses must be a list of texts, not one text", hint="pass [response]")
        if rubric is not None and rubrics is not None:
            raise InputError("give rubric or rubrics, not both", hint="pass rubrics=[rubric, ...]")
        body = self._body(image, image_name, samples, params, settings)
        body.update(instruction=instruction, responses=list(responses), reference=reference)
        if rubrics is not None:
            if isinstance(rubrics, (str, Path)):
                raise InputError("rubrics must be a list of rubrics", hint="pass rubric= for one rubric")
            body["rubrics"] = [rubric_field(r) for r in rubrics]
        elif rubric is not None:
            body["rubric"] = rubric_field(rubric)
        results = self._wire.post("/v1/judge/batch", body).get("results")
        if not isinstance(results, list):
            raise EngineError(f"{self.url}/v1/judge/batch answered without results", hint="check the server")
        out: list[Verdict | EdgeJudgeError] = []
        for item in results:
            if item.get("verdict") is not None:
                out.append(_verdict(item["verdict"], self.url))
            else:
                out.append(server_error(item.get("error"), 400, self.url))
        return out

    def judge_many(
        self,
        image: ImageInput,
        *,
        instruction: str,
        responses: Sequence[str],
        rubric: Rubric | str | Path | None = None,
        rubrics: Sequence[Rubric | str | Path] | None = None,
        reference: str | None = None,
        samples: int = 1,
        params: GenerationParams | None = None,
        image_name: str | None = None,
        **settings: Any,
    ) -> list[Verdict]:
        """``judge_each``, raising the first item's error as ``Judge.evaluate_many`` does (its message
        names the response's position when there are several)."""
        results = self.judge_each(
            image, instruction=instruction, responses=responses, rubric=rubric, rubrics=rubrics,
            reference=reference, samples=samples, params=params, image_name=image_name, **settings,
        )  # fmt: skip
        per_response = max(1, len(rubrics or ()))
        for position, result in enumerate(results):
            if isinstance(result, EdgeJudgeError):
                if len(results) > 1:
                    result.message = f"response {position // per_response + 1}: {result.message}"
                raise result
        return [r for r in results if isinstance(r, Verdict)]

    def judge_policy(
        self,
        image: ImageInput,
        *,
        policy: Policy | str | Path,
        response: str,
        instruction: str | None = None,
        reference: str | None = None,
        samples: int = 1,
        params: GenerationParams | None = None,
        image_name: str | None = None,
        review_band: Sequence[float] | None = None,
        **settings: Any,
    ) -> PolicyVerdict:
        """Judge one response against every rule of ``policy`` (``/v1/judge/policy``; ``review_band`` None:
        the server's default band)."""
        body = self._body(image, image_name, samples, params, settings)
        body.update(
            response=response, instruction=instruction, reference=reference, policy=policy_field(policy)
        )
        if review_band is not None:
            body["review_band"] = [float(v) for v in review_band]
        data = self._wire.post("/v1/judge/policy", body)
        try:
            return PolicyVerdict.from_dict(data)
        except (TypeError, KeyError, ValueError, AttributeError):
            raise _not_a_verdict(self.url) from None

    # -- judging, exactly Judge's signatures -------------------------------------------------------------
    def evaluate(
        self,
        image: ImageInput,
        *,
        instruction: str,
        response: str,
        rubric: Rubric | str | Path,
        reference: str | None = None,
        samples: int = 1,
        params: GenerationParams | None = None,
        on_text: TokenCallback | None = None,
        image_name: str | None = None,
        on_sample: Callable[[int, int], None] | None = None,
    ) -> Verdict:
        """``Judge.evaluate`` on the server (``on_sample`` is called once, when the verdict is in)."""
        verdict = self.judge(
            image, instruction=instruction, response=response, rubric=rubric, reference=reference,
            samples=samples, params=params, image_name=image_name, on_text=on_text,
        )  # fmt: skip
        if on_sample is not None:
            on_sample(samples, samples)
        return verdict

    def evaluate_many(
        self,
        image: ImageInput,
        *,
        instruction: str,
        responses: Sequence[str],
        rubric: Rubric | str | Path,
        reference: str | None = None,
        samples: int = 1,
        params: GenerationParams | None = None,
        image_name: str | None = None,
    ) -> list[Verdict]:
        """``Judge.evaluate_many`` on the server (one batch request)."""
        return self.judge_many(
            image, instruction=instruction, responses=responses, rubric=rubric, reference=reference,
            samples=samples, params=params, image_name=image_name,
        )  # fmt: skip

    def evaluate_policy(
        self,
        image: ImageInput,
        *,
        policy: Policy | str | Path,
        response: str,
        instruction: str | None = None,
        reference: str | None = None,
        samples: int = 1,
        params: GenerationParams | None = None,
        image_name: str | None = None,
        review_band: Sequence[float] = DEFAULT_REVIEW_BAND,
    ) -> PolicyVerdict:
        """``Judge.evaluate_policy`` on the server."""
        return self.judge_policy(
            image, policy=policy, response=response, instruction=instruction, reference=reference,
            samples=samples, params=params, image_name=image_name, review_band=review_band,
        )  # fmt: skip

    # -- plumbing ----------------------------------------------------------------------------------------
    def _body(
        self,
        image: ImageInput,
        image_name: str | None,
        samples: int,
        params: GenerationParams | None,
        settings: dict[str, Any],
    ) -> dict[str, Any]:
        if "samples" in settings:
            raise InputError("give samples as samples=, not among the settings", hint="pass samples=N")
        check("samples", samples)
        encoded, name = image_field(image, image_name)
        body: dict[str, Any] = {"image": encoded, **settings_fields(params, settings), "samples": samples}
        if name is not None:
            body["image_name"] = name
        return body

    def _streamed(self, body: dict[str, Any], on_text: TokenCallback) -> Verdict:
        for event, data in self._wire.events("/v1/judge", {**body, "stream": True}):
            if event == "text" and isinstance(data, dict):
                on_text(str(data.get("text", "")))
            elif event == "verdict":
                return _verdict(data, self.url)
            elif event == "error":
                error = data.get("error", data) if isinstance(data, dict) else None
                raise server_error(error, 400, self.url)
        raise EngineError(f"{self.url}/v1/judge: the stream ended without a verdict", hint="try again")

    def close(self) -> None:
        self._wire.close()


def _not_a_verdict(url: str) -> EngineError:
    return EngineError(
        f"{url} answered something that is not a verdict", hint="check that it runs edgejudge serve"
    )


def _verdict(data: Any, url: str) -> Verdict:
    try:
        return Verdict.from_dict(data)
    except (TypeError, KeyError, ValueError, AttributeError):
        raise _not_a_verdict(url) from None

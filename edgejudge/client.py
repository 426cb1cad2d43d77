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

Texts are cleaned before sending as ``Judge`` cleans them (lone surrogates, which no UTF-8 body can
carry, become U+FFFD, with the same note among the verdict's warnings). ``judge_each``/``judge_many``/
``evaluate_many`` take any number of responses and rubrics and ``evaluate_tasks`` any tasks: they go in
as few ``/v1/judge/batch`` requests as the server's limits allow (64 responses, 16 rubrics and its
``max_sequences`` per request) and come back in order.

Reproducibility: the server coalesces concurrent requests on the same image into one parallel-sequence
group, and llama.cpp's batched kernels round differently by group size, so a verdict can depend on which
other requests were in flight with it (greedy score probabilities differ by thousandths: up to 0.007
measured on the demo tiny judge, between ``settings.parallel`` 1 and 4 and between two groups of 4; the
text and score can part too). ``settings["parallel"]`` says the group
size each verdict was decoded in. For bitwise-reproducible verdicts run ``edgejudge serve --no-coalesce``
(each request decoded on its own: the same request gives the same verdict whatever else is running, the
verdict of ``Judge`` with the same grouping) or send one request at a time.

The API key is ``api_key`` or, when None, ``EDGEJUDGE_SERVE_API_KEY`` (``config.serve_api_key``). A full
queue (429) is retried honouring ``Retry-After`` ``retries`` times; a server that cannot be reached is a
``ServerUnavailableError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._client_batch import DEFAULT_MAX_SEQUENCES, clean, plan, runs, with_notes
from ._client_wire import Wire, image_field, policy_field, rubric_field, server_error, settings_fields
from ._closing import Closing
from ._many import verdicts_or_first_error
from .decision import DEFAULT_REVIEW_BAND
from .errors import EdgeJudgeError, EngineError, InputError
from .inputs import Task
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
        self._limit: int | None = None  # the server's max_sequences, once asked

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
        notes: list[str] = []
        body["instruction"] = clean("instruction", instruction, notes)
        body["response"] = clean("response", response, notes)
        if rubric is not None:
            body["rubric"] = rubric_field(rubric, notes)
        body["reference"] = clean("reference answer", reference, notes)
        if on_text is None:
            verdict = _verdict(self._wire.post("/v1/judge", body), self.url)
        else:
            verdict = self._streamed(body, on_text)
        return with_notes(verdict, notes)

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
        """Judge several responses to one image, each against ``rubric`` or against each of ``rubrics``: in
        order (for each response, each rubric), each a ``Verdict`` or the ``EdgeJudgeError`` that item got
        (one bad item never costs the others). Any number of responses and rubrics (none: ``[]``): they
        go in as few ``/v1/judge/batch`` requests as the server's limits allow (``_client_batch.plan``)."""
        if isinstance(responses, str):
            raise InputError("responses must be a list of texts, not one text", hint="pass [response]")
        if rubric is not None and rubrics is not None:
            raise InputError("give rubric or rubrics, not both", hint="pass rubrics=[rubric, ...]")
        if isinstance(rubrics, (str, Path)):
            raise InputError("rubrics must be a list of rubrics", hint="pass rubric= for one rubric")
        if rubrics is not None and not rubrics:
            raise InputError("rubrics is an empty list", hint="pass at least one rubric, or leave it out")
        body = self._body(image, image_name, samples, params, settings)
        return self._each(body, instruction, responses, rubrics, rubric, reference, samples)

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
        return verdicts_or_first_error(results, max(1, len(rubrics or ())))

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
        notes: list[str] = []
        body["instruction"] = clean("instruction", instruction, notes)
        body["response"] = clean("response", response, notes)
        body["reference"] = clean("reference answer", reference, notes)
        body["policy"] = policy_field(policy)
        if review_band is not None:
            body["review_band"] = [float(v) for v in review_band]
        data = self._wire.post("/v1/judge/policy", body)
        try:
            verdict = PolicyVerdict.from_dict(data)
        except (TypeError, KeyError, ValueError, AttributeError):
            raise _not_a_verdict(self.url) from None
        if not notes:
            return verdict
        rules = tuple(
            rule if rule.verdict is None else replace(rule, verdict=with_notes(rule.verdict, notes))
            for rule in verdict.rules
        )
        return replace(verdict, rules=rules)

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
        """``Judge.evaluate_many`` on the server (as few batch requests as the server's limits allow)."""
        return self.judge_many(
            image, instruction=instruction, responses=responses, rubric=rubric, reference=reference,
            samples=samples, params=params, image_name=image_name,
        )  # fmt: skip

    def evaluate_tasks(
        self, tasks: Sequence[Task], *, samples: int = 1, params: GenerationParams | None = None
    ) -> list[Verdict | EdgeJudgeError]:
        """``Judge.evaluate_tasks`` on the server: in order, each a ``Verdict`` or the ``EdgeJudgeError``
        that task got (one bad task never costs the others; a server that cannot answer raises). Runs of
        consecutive tasks on the same image, instruction, reference and rubric go as one batch (split
        within the server's limits); other tasks in requests of their own."""
        body = self._body(None, None, samples, params, {})
        results: list[Verdict | EdgeJudgeError | None] = [None] * len(tasks)
        keys: list[tuple[Any, ...] | None] = []
        for position, task in enumerate(tasks):
            try:
                encoded, name = image_field(task.image, task.image_name)
                key = json.dumps([encoded, name, task.instruction, task.reference, rubric_field(task.rubric)])
            except EdgeJudgeError as err:
                results[position] = err
                keys.append(None)
                continue
            keys.append((key, encoded, name))
        for run in runs(keys):
            try:
                got = self._run(body, tasks, keys, run, samples)
            except EngineError:
                raise
            except EdgeJudgeError as err:  # the request as a whole: each task alone gets its own answer
                got = [err] if len(run) == 1 else [self._one(body, tasks, keys, p, samples) for p in run]
            for position, result in zip(run, got, strict=True):
                results[position] = result
        return [r for r in results if r is not None]

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
        image: ImageInput | None,
        image_name: str | None,
        samples: int,
        params: GenerationParams | None,
        settings: dict[str, Any],
    ) -> dict[str, Any]:
        """The image (None: left for the caller) and the settings of a request, checked before sending."""
        if "samples" in settings:
            raise InputError("give samples as samples=, not among the settings", hint="pass samples=N")
        check("samples", samples)
        body: dict[str, Any] = {**settings_fields(params, settings), "samples": samples}
        if image is not None:
            body["image"], name = image_field(image, image_name)
            if name is not None:
                body["image_name"] = name
        return body

    def _each(
        self,
        body: dict[str, Any],
        instruction: str,
        responses: Sequence[str],
        rubrics: Sequence[Rubric | str | Path] | None,
        rubric: Rubric | str | Path | None,
        reference: str | None,
        samples: int,
    ) -> list[Verdict | EdgeJudgeError]:
        """``judge_each`` on a request ``body`` holding the image and settings: the texts cleaned as
        ``Judge`` cleans them (their notes on each verdict), the items split into requests by ``plan``."""
        shared: list[str] = []  # notes in Judge's order: instruction, response, rubric, reference
        body = {**body, "instruction": clean("instruction", instruction, shared)}
        own = [list[str]() for _ in responses]
        texts = [clean("response", text, notes) for text, notes in zip(responses, own, strict=True)]
        given = [rubric] if rubrics is None else list(rubrics)
        rubric_notes = [list[str]() for _ in given]
        fields = [None if r is None else rubric_field(r, n) for r, n in zip(given, rubric_notes, strict=True)]
        reference_notes: list[str] = []
        body["reference"] = clean("reference answer", reference, reference_notes)
        limit = self._max_sequences() if len(texts) * len(fields) > 1 else DEFAULT_MAX_SEQUENCES
        placed: dict[int, Verdict | EdgeJudgeError] = {}
        for response_range, rubric_range in plan(len(texts), len(fields), samples, limit):
            part = {**body, "responses": [texts[i] for i in response_range]}
            if rubrics is not None:
                part["rubrics"] = [fields[k] for k in rubric_range]
            elif fields[0] is not None:
                part["rubric"] = fields[0]
            items = [(i, k) for i in response_range for k in rubric_range]
            results = self._wire.post("/v1/judge/batch", part).get("results")
            if not isinstance(results, list) or len(results) != len(items):
                raise EngineError(
                    f"{self.url}/v1/judge/batch answered without results", hint="check the server"
                )
            for (i, k), item in zip(items, results, strict=True):
                if isinstance(item, dict) and item.get("verdict") is not None:
                    notes = [*shared, *own[i], *rubric_notes[k], *reference_notes]
                    placed[i * len(fields) + k] = with_notes(_verdict(item["verdict"], self.url), notes)
                else:
                    error = item.get("error") if isinstance(item, dict) else None
                    placed[i * len(fields) + k] = server_error(error, 400, self.url)
        return [placed[n] for n in sorted(placed)]

    def _run(
        self,
        body: dict[str, Any],
        tasks: Sequence[Task],
        keys: Sequence[tuple[Any, ...] | None],
        run: Sequence[int],
        samples: int,
    ) -> list[Verdict | EdgeJudgeError]:
        """The tasks at ``run`` (one image, instruction, reference and rubric) as one ``judge_each``."""
        first, (_, encoded, name) = tasks[run[0]], keys[run[0]]  # type: ignore[misc]
        each = {**body, "image": encoded, **({} if name is None else {"image_name": name})}
        responses = [tasks[p].response for p in run]
        return self._each(each, first.instruction, responses, None, first.rubric, first.reference, samples)

    def _one(
        self, body: dict[str, Any], tasks: Sequence[Task], keys: Sequence[tuple[Any, ...] | None], at: int,
        samples: int,
    ) -> Verdict | EdgeJudgeError:  # fmt: skip
        try:
            return self._run(body, tasks, keys, [at], samples)[0]
        except EngineError:
            raise
        except EdgeJudgeError as err:
            return err

    def _max_sequences(self) -> int:
        """The most sequences one request may decode: the server's ``max_sequences`` (``GET /v1/model``),
        else ``DEFAULT_MAX_SEQUENCES``; asked once."""
        if self._limit is None:
            said = self.model().get("max_sequences")
            if isinstance(said, int) and not isinstance(said, bool) and said > 0:
                self._limit = said
            else:
                self._limit = DEFAULT_MAX_SEQUENCES
        return self._limit

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

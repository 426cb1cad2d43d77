"""The routes of ``edgejudge serve`` (the contract in the README): judging, the libraries, the model,
health and metrics.

A judging route reads its body (already size-limited by ``limits.Gate``), parses it and decodes the image
in worker threads (``ServeState.in_thread``), checks everything the CLI checks before a judge would run,
then submits one ``Job`` to the worker and awaits its future, polling for the client's disconnect (which
cancels the job) and for ``ServeState.aborting`` (shutting down past the drain timeout: 503). The body is
read from the request's stream (never cached on it) and the base64 image dropped once decoded, so a waiting
request holds only its fitted image and texts; ``budget`` bounds its sequences and texts first.
``stream: true`` answers server-sent events: the feedback as it is generated
(``event: text``), then ``event: verdict`` or ``event: error``; the worker's ``on_text`` reaches the
response through ``loop.call_soon_threadsafe`` into an ``asyncio.Queue``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse

from ..errors import EdgeJudgeError, InputError, PolicyError, RubricError
from ..inputs import Task, check_texts
from .budget import check_length, check_sequences
from .limits import error_body
from .metrics import CONTENT_TYPE
from .replies import ClientGone, SchemaViolation, error_of, json_response, json_text, request_body
from .schema import (
    DEFAULT_RUBRIC,
    BatchRequest,
    JudgeRequest,
    PolicyRequest,
    decode_image,
    generation,
    image_bytes,
    parse_body,
    policy_of,
    rubric_of,
    shown,
    validation_error,
)
from .worker import Cancelled, Job, ShuttingDownError

if TYPE_CHECKING:
    from ..images import FittedImage
    from ..rubric import Rubric
    from .state import ServeState

__all__ = ["add_routes"]

_POLL_S = 0.2  # how often a waiting request checks that its client is still there
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input (an image, rubric, policy, setting or text the judge cannot use)."},
    401: {"description": "A missing or wrong API key."},
    408: {"description": "The body did not arrive in time."},
    413: {"description": "The body or the image is too large."},
    415: {"description": "Not JSON nor multipart/form-data."},
    422: {"description": "The body breaks the schema (a missing field, a wrong type)."},
    429: {"description": "The queue is full; retry after the Retry-After header's seconds."},
    503: {"description": "The server is shutting down, or the engine is unavailable."},
}


async def _parse(state: ServeState, request: Request, model: type[Any]) -> tuple[Any, bytes | None]:
    """The request model and the multipart image's bytes. The body is read here (never cached on the
    request, so nothing but the model and the upload keeps it once this returns); a client that leaves
    while sending it is ``ClientGone``."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
    except ClientDisconnect:
        raise ClientGone from None
    try:
        return await state.in_thread(parse_body, model, body, request.headers.get("content-type", ""))
    except ValidationError as err:
        problem = validation_error(err, model)
        if err.errors()[0].get("type") == "json_invalid":
            raise problem from None  # not JSON at all: bad input (400), not a schema violation
        raise SchemaViolation(problem) from None


async def _image(state: ServeState, req: Any, upload: bytes | None) -> FittedImage:
    """The fitted image; the request's base64 text is dropped (``req.image`` emptied) so that a waiting
    request holds only the fitted image and its texts (the caller drops ``upload``)."""

    def decode() -> FittedImage:
        data = upload if upload is not None else image_bytes(req.image, req.image_name)
        req.image = ""
        return decode_image(data, req.image_name, state.judge, state.config.pixel_limit)

    result: FittedImage = await state.in_thread(decode)
    return result


def _too_long(state: ServeState, fields: dict[str, str | None]) -> EdgeJudgeError | None:
    """The ``ContextOverflowError`` of a field (label → text) too long for any prompt, or None."""
    try:
        for label, text in fields.items():
            check_length(label, text, state.n_ctx)
    except EdgeJudgeError as err:
        return err
    return None


async def _result(state: ServeState, request: Request, job: Job) -> Any:
    """Submit ``job`` and await its result; a client that goes away cancels it (``ClientGone``)."""
    state.worker.submit(job)
    future = _wrapped(job)
    while True:
        done, _ = await asyncio.wait({future}, timeout=_POLL_S)
        if done:
            return future.result()
        if state.aborting:  # shutting down, out of patience: the client gets 503, the result is dropped
            state.worker.cancel(job)
            future.cancel()
            raise _aborted()
        if await request.is_disconnected():
            state.worker.cancel(job)
            future.cancel()
            raise ClientGone


def _aborted() -> ShuttingDownError:
    return ShuttingDownError(
        "the server shut down before this request was judged", hint="retry later or on another server"
    )


def _event(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json_text(data)}\n\n".encode()


def _wrapped(job: Job) -> asyncio.Future[Any]:
    """The job's future in this loop; its outcome counts as seen even when nobody waits for it any more."""
    future = asyncio.wrap_future(job.future)
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


def _stream(state: ServeState, job: Job, texts: asyncio.Queue[str]) -> Response:
    future = _wrapped(job)

    async def events() -> AsyncIterator[bytes]:
        try:
            while not future.done():
                if state.aborting:
                    yield _event("error", {"error": error_of(_aborted())})
                    return
                getter = asyncio.ensure_future(texts.get())
                done, _ = await asyncio.wait(
                    {getter, future}, timeout=_POLL_S, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    yield _event("text", {"text": getter.result()})
                else:
                    getter.cancel()
            while not texts.empty():
                yield _event("text", {"text": texts.get_nowait()})
            try:
                item = future.result()[0]
            except Cancelled:  # the client went away: nobody to tell
                return
            except EdgeJudgeError as err:
                item = err
            except Exception as err:  # noqa: BLE001 - the stream has begun: the failure is its last event
                item = None
                yield _event("error", error_body("InternalError", f"unexpected {type(err).__name__}: {err}"))
            if item is None:
                return
            if isinstance(item, EdgeJudgeError):
                yield _event("error", {"error": error_of(item)})
            else:
                yield _event("verdict", item.to_dict())
        finally:
            if not future.done():
                state.worker.cancel(job)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _rubric_label(value: Any) -> str:
    if isinstance(value, dict):
        name = value.get("name")
        return shown(name.strip()) if isinstance(name, str) and name.strip() else "inline"
    return DEFAULT_RUBRIC if value is None else shown(str(value))


def add_routes(app: FastAPI, state: ServeState) -> None:  # noqa: C901 - one closure per route
    worker = state.worker

    @app.post(
        "/v1/judge",
        summary="Judge one response to one image",
        openapi_extra=request_body(JudgeRequest, multipart=True),
        responses={200: {"description": "The verdict (as `edgejudge judge --json` prints it), or with "
                         "`stream: true` server-sent events: text…, then verdict or error."}, **_ERRORS},
    )  # fmt: skip
    async def judge(request: Request) -> Response:
        req, upload = await _parse(state, request, JudgeRequest)
        params, samples = generation(req, state.config.defaults)
        check_sequences({"samples": samples}, state.config.max_sequences)
        rubric = rubric_of(req.rubric)
        check_texts(req.instruction, req.response)
        fields = {"response": req.response, "reference": req.reference, "instruction": req.instruction}
        overflow = _too_long(state, fields)
        if overflow is not None:
            raise overflow
        fitted = await _image(state, req, upload)
        del upload
        task = Task(fitted, req.instruction, req.response, rubric, req.reference, req.image_name)
        if req.stream:
            loop = asyncio.get_running_loop()
            texts: asyncio.Queue[str] = asyncio.Queue()

            def on_text(text: str) -> None:
                loop.call_soon_threadsafe(texts.put_nowait, text)

            job = Job([task], params, samples, image_key=fitted.pixels_sha256, on_text=on_text)
            worker.submit(job)
            return _stream(state, job, texts)
        result = await _result(state, request, Job([task], params, samples, image_key=fitted.pixels_sha256))
        item = result[0]
        if isinstance(item, EdgeJudgeError):
            raise item
        return json_response(item.to_dict())

    @app.post(
        "/v1/judge/batch",
        summary="Judge several responses (each against several rubrics) about one image",
        openapi_extra=request_body(BatchRequest, multipart=False),
        responses={200: {"description": "{results: [{response_index, rubric, verdict, error}]}, in order: "
                         "for each response, each rubric."}, **_ERRORS},
    )  # fmt: skip
    async def judge_batch(request: Request) -> Response:
        req, upload = await _parse(state, request, BatchRequest)
        if req.rubrics is not None and req.rubric is not None:
            raise InputError("give rubric or rubrics, not both", hint="put the rubric in the rubrics list")
        params, samples = generation(req, state.config.defaults)
        choices = req.rubrics if req.rubrics is not None else [req.rubric]
        counts = {"responses": len(req.responses), "rubrics": len(choices), "samples": samples}
        check_sequences(counts, state.config.max_sequences)
        rubrics: list[Rubric | RubricError] = []
        seen: dict[str, Rubric | RubricError] = {}
        for value in choices:  # each distinct rubric read once
            key = json_text(value)
            if key not in seen:
                try:
                    seen[key] = rubric_of(value)
                except RubricError as err:
                    seen[key] = err
            rubrics.append(seen[key])
        if not isinstance(req.instruction, str) or not req.instruction.strip():
            check_texts(req.instruction, "-")
        shared = _too_long(state, {"instruction": req.instruction, "reference": req.reference})
        if shared is not None:
            raise shared
        overflows = [_too_long(state, {"response": r}) for r in req.responses]
        fitted = await _image(state, req, upload)
        del upload
        tasks: list[Task] = []
        slots: list[tuple[int, str, int | EdgeJudgeError]] = []
        for index, response in enumerate(req.responses):
            for value, rubric in zip(choices, rubrics, strict=True):
                if isinstance(rubric, RubricError):
                    slots.append((index, _rubric_label(value), rubric))
                    continue
                overflow = overflows[index]
                if overflow is not None:
                    slots.append((index, rubric.name, overflow))
                    continue
                slots.append((index, rubric.name, len(tasks)))
                tasks.append(Task(fitted, req.instruction, response, rubric, req.reference, req.image_name))
        results: list[Any] = []
        if tasks:
            results = await _result(
                state, request, Job(tasks, params, samples, image_key=fitted.pixels_sha256)
            )
        out = []
        for index, name, at in slots:
            item = at if isinstance(at, EdgeJudgeError) else results[at]
            verdict, error = (
                (None, error_of(item)) if isinstance(item, EdgeJudgeError) else (item.to_dict(), None)
            )
            out.append({"response_index": index, "rubric": name, "verdict": verdict, "error": error})
        return json_response({"results": out})

    @app.post(
        "/v1/judge/policy",
        summary="Judge one response against every rule of a policy",
        openapi_extra=request_body(PolicyRequest, multipart=False),
        responses={
            200: {"description": "The policy verdict (as `edgejudge judge --policy --json`)."},
            **_ERRORS,
        },
    )
    async def judge_policy(request: Request) -> Response:
        from ..decision import DEFAULT_REVIEW_BAND, check_band

        req, upload = await _parse(state, request, PolicyRequest)
        params, samples = generation(req, state.config.defaults)
        policy = policy_of(req.policy)
        check_sequences({"rules": len(policy.rules), "samples": samples}, state.config.max_sequences)
        band = check_band(req.review_band) if req.review_band is not None else DEFAULT_REVIEW_BAND
        missing = [r.id for r in policy.rules if policy.instruction_for(r, req.instruction) is None]
        if missing:
            raise PolicyError(
                f"policy '{policy.name}' gives no instruction for rule(s) {', '.join(missing)}: "
                "give instruction",
                hint="give the request an instruction",
                about="instruction",
            )
        for rule in policy.rules:
            instruction = policy.instruction_for(rule, req.instruction)
            check_texts(instruction, req.response)
            fields = {"response": req.response, "reference": req.reference, "instruction": instruction}
            overflow = _too_long(state, fields)
            if overflow is not None:
                raise overflow
        fitted = await _image(state, req, upload)
        del upload
        task = Task(fitted, req.instruction or "", req.response, None, req.reference, req.image_name)
        job = Job([task], params, samples, image_key=fitted.pixels_sha256, policy=policy, review_band=band)
        verdict = await _result(state, request, job)
        return json_response(verdict.to_dict())

    @app.get("/v1/rubrics", summary="The built-in rubrics")
    async def rubrics() -> Response:
        from ..rubric import builtin_rubrics

        return json_response({"rubrics": [r.to_dict() for r in builtin_rubrics().values()]})

    @app.get(
        "/v1/rubrics/{name}", summary="One built-in rubric", responses={404: {"description": "Unknown."}}
    )
    async def one_rubric(name: str) -> Response:
        try:
            return json_response(rubric_of(name).to_dict())
        except RubricError as err:
            return json_response({"error": error_of(err)}, 404)

    @app.get("/v1/policies", summary="The built-in policies")
    async def policies() -> Response:
        from ..policy import builtin_policies

        return json_response({"policies": [p.to_dict() for p in builtin_policies().values()]})

    @app.get(
        "/v1/policies/{name}", summary="One built-in policy", responses={404: {"description": "Unknown."}}
    )
    async def one_policy(name: str) -> Response:
        try:
            return json_response(policy_of(name).to_dict())
        except PolicyError as err:
            return json_response({"error": error_of(err)}, 404)

    @app.get("/v1/model", summary="The loaded judge model")
    async def model() -> Response:
        return json_response(state.model)

    @app.get(
        "/healthz",
        summary="Liveness (never needs the API key)",
        responses={503: {"description": "Draining."}},
    )
    async def healthz() -> Response:
        if state.draining():
            return json_response({"status": "draining"}, 503)
        return json_response({"status": "ok"})

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics() -> Response:
        assert state.metrics is not None
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

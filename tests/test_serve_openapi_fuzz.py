"""The OpenAPI document of ``edgejudge serve`` fuzzed with schemathesis against a real server on the tiny real
judge (llama.cpp, not the fake engine): each operation of the document, a quick profile (25 valid and 25
invalid requests per operation, from the document's schemas, and 25 valid ones with a real image put in
so that they reach the judge), and no answer may be a 5xx
(``not_a_server_error``); every error answer has the contract's shape. The document's own examples are
sent as they are and must be judged (200). The server stays healthy throughout.

The context is kept small (``--n-ctx 1536``) so a generated request that does reach the model generates at
most a few hundred tokens. (Schemathesis' pytest plugin does not load with this pytest; its Python API is
used with hypothesis directly.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.helpers.serve import ServeHandle, image_b64, png_bytes, running_serve

MAX_EXAMPLES = 25
OPERATIONS = [
    ("/v1/judge", "POST"),
    ("/v1/judge/batch", "POST"),
    ("/v1/judge/policy", "POST"),
    ("/v1/rubrics", "GET"),
    ("/v1/rubrics/{name}", "GET"),
    ("/v1/policies", "GET"),
    ("/v1/policies/{name}", "GET"),
    ("/v1/model", "GET"),
    ("/healthz", "GET"),
    ("/metrics", "GET"),
]


@pytest.fixture(scope="module")
def fuzz_server(tiny_gguf: tuple[Path, Path]) -> Iterator[ServeHandle]:
    with running_serve(*tiny_gguf, "--n-ctx", "1536", "--max-body-mb", "4") as handle:
        yield handle


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServeHandle) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


def test_the_document_lists_exactly_the_contract(api_schema: Any) -> None:
    listed = {
        (path, method.upper()) for path, item in api_schema.raw_schema["paths"].items() for method in item
    }
    assert listed == set(OPERATIONS)


def _check(case: Any, server: ServeHandle) -> None:
    response = case.call(base_url=server.url, timeout=120)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "hint"}, body
        assert body["error"]["message"] and "\n" not in body["error"]["message"], body


#: Each operation with valid data, and those with a body with invalid data too (the others have nothing
#: to get wrong: any text is a valid name).
#: "image": valid data with a real image put in (so the texts, rubrics, policies and settings the fuzzer
#: makes reach the judge), the samples and the generation budget capped to keep the run short.
CASES = (
    [(p, m, "positive") for p, m in OPERATIONS]
    + [(p, m, "negative") for p, m in OPERATIONS if m == "POST"]
    + [(p, m, "image") for p, m in OPERATIONS if m == "POST"]
)
_IMAGE = image_b64(png_bytes((40, 30)))


def _with_image(case: Any) -> Any:
    if isinstance(case.body, dict):
        case.body["image"] = _IMAGE
        if isinstance(case.body.get("samples"), int):
            case.body["samples"] = min(max(case.body["samples"], 1), 2)
        case.body["max_tokens"] = 12
    return case


def _answered(server: ServeHandle, path: str, status: str = "") -> float:
    """The requests the server counted on route ``path`` (with that status, if given) (its /metrics)."""
    total = 0.0
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if not line.startswith("edgejudge_http_requests_total{") or f'route="{path}"' not in line:
            continue
        if not status or f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=[f"{m} {p} {mode}" for p, m, mode in CASES])
def test_no_operation_answers_a_server_error(
    api_schema: Any, fuzz_server: ServeHandle, path: str, method: str, mode: str
) -> None:
    operation = api_schema[path][method]
    before, judged = _answered(fuzz_server, path), _answered(fuzz_server, path, "200")
    generation = GenerationMode.NEGATIVE if mode == "negative" else GenerationMode.POSITIVE
    strategy = operation.as_strategy(generation_mode=generation)
    if mode == "image":
        strategy = strategy.map(_with_image)

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    def fuzz(case: Any) -> None:
        _check(case, fuzz_server)

    fuzz()
    assert httpx.get(f"{fuzz_server.url}/healthz").json() == {"status": "ok"}
    if path not in ("/metrics", "/healthz"):
        assert _answered(fuzz_server, path) - before >= (MAX_EXAMPLES if method == "POST" else 1)
    if mode == "image" and path == "/v1/judge":
        assert _answered(fuzz_server, path, "200") > judged  # the fuzzer's requests reached the judge


def test_the_documented_examples_are_judged(api_schema: Any, fuzz_server: ServeHandle) -> None:
    schemas = api_schema.raw_schema["components"]["schemas"]
    routes = {
        "JudgeRequest": "/v1/judge",
        "BatchRequest": "/v1/judge/batch",
        "PolicyRequest": "/v1/judge/policy",
    }
    sent = 0
    for name, path in routes.items():
        for example in schemas[name]["examples"]:
            reply = httpx.post(f"{fuzz_server.url}{path}", json={**example, "max_tokens": 16}, timeout=300)
            assert reply.status_code == 200, (name, reply.text)
            sent += 1
    assert sent >= 4


_FIELDS = ["image", "image_name", "instruction", "response", "responses", "rubric", "rubrics", "policy",
           "review_band", "samples", "max_tokens", "seed", "grammar", "stream", "bogus"]  # fmt: skip
_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "0",
            "1",
            "true",
            "[]",
            '["vqa-helpfulness"]',
            "[0.2, 0.8]",
            "{",
            '{"criteria": "c"}',
            "NaN",
            "1" + "0" * 400,
            "vqa-helpfulness",
            "marketplace-listing",
        ]
    ),  # fmt: skip
)


@st.composite
def _multipart_bodies(draw: Any) -> tuple[bytes, str]:
    """A multipart body, well formed or not: any boundary length (to 400), parts with or without names
    and file names, the tiny image or junk as the file, and a body cut short or with junk after it."""
    boundary = draw(st.sampled_from(["XyZ", "-" * 70, "B" * 257, "b" * 400, "a b", ""]))
    parts = []
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=8)):
        if name == "image" and draw(st.booleans()):
            data = draw(st.sampled_from([png_bytes((40, 30)), b"junk", b""]))
            head = f'Content-Disposition: form-data; name="image"; filename="{draw(st.text(max_size=8))}"'
        else:
            data = draw(_VALUES).encode("utf-8", "surrogatepass")
            head = draw(st.sampled_from([f'Content-Disposition: form-data; name="{name}"', "X-Other: 1", ""]))
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode("utf-8", "surrogatepass") + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    cut = draw(st.sampled_from([None, len(body) // 2, 5]))
    body = (body[:cut] if cut is not None else body) + draw(st.sampled_from([b"", b"junk" * 50]))
    return body, f"multipart/form-data; boundary={boundary}" if boundary else "multipart/form-data"


@pytest.mark.parametrize("path", ["/v1/judge", "/v1/judge/batch", "/v1/judge/policy"])
def test_multipart_bodies_never_get_a_server_error(fuzz_server: ServeHandle, path: str) -> None:
    @given(sent=_multipart_bodies())
    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def fuzz(sent: tuple[bytes, str]) -> None:
        body, kind = sent
        reply = httpx.post(
            f"{fuzz_server.url}{path}",
            content=body,
            headers={"content-type": kind},
            timeout=120,
        )
        assert reply.status_code < 500, reply.text
        if reply.status_code >= 400:
            error = reply.json()["error"]
            assert (
                set(error) == {"type", "message", "hint"}
                and error["message"]
                and "\n" not in error["message"]
            )

    fuzz()
    assert httpx.get(f"{fuzz_server.url}/healthz").json() == {"status": "ok"}
    assert "Traceback" not in fuzz_server.stderr

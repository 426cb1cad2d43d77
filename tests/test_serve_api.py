"""``edgejudge serve`` over real HTTP: a real server subprocess on the tiny real judge (llama.cpp), real
httpx clients, the CLI run as a child process for the verdicts to compare with.

Verdicts at temperature 0 equal ``edgejudge judge --json``'s (JSON, multipart, an inline rubric, a
policy), batch order and per-item errors, the stream's pieces, the read-only routes, the API key, and
bad input (images, fields, types, bodies): a 4xx JSON error with the CLI's message, the server still
healthy afterwards, and nothing a client sent written to disk.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._support import cli
from tests.helpers.serve import ServeHandle, image_b64, png_bytes, running_serve

ASK = {"instruction": "What colour is the picture?", "response": "It is red.", "max_tokens": 24}


@pytest.fixture(scope="module")
def spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's TMPDIR: it must stay empty (nothing a client sends is written to disk)."""
    return tmp_path_factory.mktemp("serve-tmpdir")


@pytest.fixture(scope="module")
def server(tiny_gguf: tuple[Path, Path], spool_dir: Path) -> Iterator[ServeHandle]:
    with running_serve(*tiny_gguf, "--temperature", "0", env={"TMPDIR": str(spool_dir)}) as handle:
        yield handle


@pytest.fixture()
def http(server: ServeHandle) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}  # healthy after every test


@pytest.fixture(scope="module")
def red(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "red.png"
    path.write_bytes(png_bytes())
    return path


def cli_json(model: Path, image: Path, *args: str) -> dict[str, Any]:
    """``edgejudge judge IMAGE ... --json`` run in the image's folder (so messages name it alike)."""
    argv = cli("judge", image.name, "-m", str(model), "--temperature", "0", "--json", *args)
    done = subprocess.run(argv, cwd=image.parent, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def cli_error(image: Path, *args: str) -> str:
    """The ``error:`` line ``edgejudge judge`` prints for a bad input (exit 1)."""
    argv = cli("judge", image.name, "-i", "q", "--response", "r", "--json", *args)
    done = subprocess.run(argv, cwd=image.parent, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    line = next(x for x in done.stderr.splitlines() if x.startswith("error: "))
    return line.removeprefix("error: ")


def same_verdict(served: dict[str, Any], local: dict[str, Any]) -> None:
    for key in ("score", "feedback", "raw_output", "settings", "rubric", "image", "model", "warnings"):
        assert served[key] == local[key], key
    assert served["score_probs"].keys() == local["score_probs"].keys()
    for k, p in local["score_probs"].items():
        assert served["score_probs"][k] == pytest.approx(p, abs=1e-6)


def ask_args() -> list[str]:
    return ["-i", ASK["instruction"], "--response", ASK["response"], "--max-tokens", str(ASK["max_tokens"])]


# -- verdicts ------------------------------------------------------------------------------------------
def test_judge_json_and_multipart_equal_the_cli(
    http: httpx.Client, red: Path, tiny_gguf: tuple[Path, Path], spool_dir: Path
) -> None:
    local = cli_json(tiny_gguf[0], red, *ask_args())
    body = {"image": image_b64(red.read_bytes()), "image_name": "red.png", **ASK}
    served = http.post("/v1/judge", json=body)
    assert served.status_code == 200, served.text
    same_verdict(served.json(), local)
    form = {k: str(v) for k, v in ASK.items()}
    upload = http.post("/v1/judge", data=form, files={"image": ("red.png", red.read_bytes(), "image/png")})
    assert upload.status_code == 200, upload.text
    same_verdict(upload.json(), local)
    data_url = http.post("/v1/judge", json={**body, "image": "data:image/png;base64," + body["image"]})
    same_verdict(data_url.json(), local)
    assert list(spool_dir.iterdir()) == []


def test_inline_rubric_equals_the_cli_inline_rubric(
    http: httpx.Client, red: Path, tiny_gguf: tuple[Path, Path]
) -> None:
    scores = ["Wrong colour", "Mostly wrong", "Partly right", "Mostly right", "Exactly the colour"]
    criteria = "Does the answer name the picture's colour?"
    flags = [x for k, s in enumerate(scores, 1) for x in (f"--score{k}", s)]
    local = cli_json(tiny_gguf[0], red, *ask_args(), "--criteria", criteria, *flags)
    rubric = {"criteria": criteria, **{f"score{k}_description": s for k, s in enumerate(scores, 1)}}
    body = {"image": image_b64(red.read_bytes()), "image_name": "red.png", "rubric": rubric, **ASK}
    served = http.post("/v1/judge", json=body)
    assert served.status_code == 200, served.text
    same_verdict(served.json(), local)
    assert served.json()["rubric"] == "inline"
    named = http.post("/v1/judge", json={**body, "rubric": "caption-quality"}).json()
    same_verdict(named, cli_json(tiny_gguf[0], red, *ask_args(), "-r", "caption-quality"))


def test_policy_equals_judge_policy_json(http: httpx.Client, red: Path, tiny_gguf: tuple[Path, Path]) -> None:
    argv = ["--policy", "marketplace-listing", "--response", "Red bike, 80 EUR", "--max-tokens", "16"]
    local = cli_json(tiny_gguf[0], red, *argv)
    body = {
        "image": image_b64(red.read_bytes()),
        "image_name": "red.png",
        "policy": "marketplace-listing",
        "response": "Red bike, 80 EUR",
        "max_tokens": 16,
    }
    served = http.post("/v1/judge/policy", json=body)
    assert served.status_code == 200, served.text
    got = served.json()
    assert got["decision"] == local["decision"]
    assert [r["rule_id"] for r in got["rules"]] == [r["rule_id"] for r in local["rules"]]
    for mine, theirs in zip(got["rules"], local["rules"], strict=True):
        assert (mine["passed"], mine["state"], mine["error"]) == (
            theirs["passed"],
            theirs["state"],
            theirs["error"],
        )
        assert mine["p_pass"] == pytest.approx(theirs["p_pass"], abs=1e-6)
        same_verdict(mine["verdict"], theirs["verdict"])
    assert got["policy"] == local["policy"] and got["review_band"] == local["review_band"]
    inline = json.loads(json.dumps(http.get("/v1/policies/marketplace-listing").json()))
    for key in ("sha256", "source"):
        inline.pop(key)
    for rule in inline["rules"]:
        rule["rubric"] = {
            k: v
            for k, v in rule["rubric"].items()
            if k in ("criteria", "score1", "score2", "score3", "score4", "score5", "name")
        }
    again = http.post("/v1/judge/policy", json={**body, "policy": inline})
    assert again.status_code == 200, again.text
    assert again.json()["decision"] == local["decision"]


def test_batch_keeps_the_order_and_the_per_item_errors(http: httpx.Client, red: Path) -> None:
    body = {
        "image": image_b64(red.read_bytes()),
        "image_name": "red.png",
        "instruction": ASK["instruction"],
        "responses": ["It is red.", "   ", "It is blue."],
        "rubrics": ["vqa-helpfulness", "no-such-rubric", "visual-grounding"],
        "max_tokens": 16,
    }
    reply = http.post("/v1/judge/batch", json=body)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [(r["response_index"], r["rubric"]) for r in results] == [
        (i, name) for i in range(3) for name in ("vqa-helpfulness", "no-such-rubric", "visual-grounding")
    ]
    for item in results:
        bad = item["response_index"] == 1 or item["rubric"] == "no-such-rubric"
        assert (item["verdict"] is None) == bad and (item["error"] is None) != bad, item
    assert results[1]["error"]["type"] == "RubricError"
    assert results[1]["error"]["message"].startswith("unknown rubric 'no-such-rubric'")
    assert results[3]["error"] == {
        "type": "InputError",
        "message": "the response is empty",
        "hint": results[3]["error"]["hint"],
    }
    single = http.post(
        "/v1/judge",
        json={
            "image": body["image"],
            "image_name": "red.png",
            "instruction": ASK["instruction"],
            "response": "It is blue.",
            "rubric": "visual-grounding",
            "max_tokens": 16,
        },
    ).json()
    assert results[8]["verdict"]["score"] == single["score"]
    assert results[8]["verdict"]["rubric"] == "visual-grounding"


def test_stream_pieces_concatenate_to_the_verdict(http: httpx.Client, red: Path) -> None:
    body = {"image": image_b64(red.read_bytes()), "image_name": "red.png", "stream": True, **ASK}
    pieces: list[str] = []
    events: list[tuple[str, Any]] = []
    with http.stream("POST", "/v1/judge", json=body) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in reply.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    assert [k for k, _ in events[:-1]] == ["text"] * (len(events) - 1)
    pieces = [data["text"] for _, data in events[:-1]]
    final_kind, verdict = events[-1]
    assert final_kind == "verdict" and len(pieces) > 1
    assert "".join(pieces) == verdict["raw_output"]
    plain = http.post("/v1/judge", json={**body, "stream": False}).json()
    assert verdict["raw_output"] == plain["raw_output"] and verdict["score"] == plain["score"]


# -- read-only routes ---------------------------------------------------------------------------------
def test_rubrics_policies_model_health_metrics(http: httpx.Client, tiny_gguf: tuple[Path, Path]) -> None:
    from edgejudge.policy import builtin_policies
    from edgejudge.rubric import builtin_rubrics

    rubrics = http.get("/v1/rubrics").json()["rubrics"]
    assert [r["name"] for r in rubrics] == list(builtin_rubrics())
    assert http.get("/v1/rubrics/ocr-accuracy").json() == builtin_rubrics()["ocr-accuracy"].to_dict()
    missing = http.get("/v1/rubrics/nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "RubricError"
    policies = http.get("/v1/policies").json()["policies"]
    assert [p["name"] for p in policies] == list(builtin_policies())
    assert http.get("/v1/policies/figure-grading").json()["name"] == "figure-grading"
    assert http.get("/v1/policies/nope").status_code == 404
    model = http.get("/v1/model").json()
    assert model["name"] == tiny_gguf[0].stem and model["engine"] == "llama.cpp" and model["quant"] == "F16"
    assert model["files"] == {"model": str(tiny_gguf[0]), "mmproj": str(tiny_gguf[1])}
    assert {"sha256", "context", "image_size", "image_tokens", "max_parallel"} <= model.keys()
    assert http.get("/healthz").json() == {"status": "ok"}
    text = http.get("/metrics").text
    for name in ("edgejudge_http_requests_total", "edgejudge_http_request_seconds_bucket",
                 "edgejudge_queue_depth", "edgejudge_in_flight", "edgejudge_groups_total",
                 "edgejudge_coalesced_jobs_total", "edgejudge_cancelled_jobs_total",
                 "edgejudge_prefix_reuse_ratio"):  # fmt: skip
        assert name in text, name
    assert 'route="/v1/rubrics/{name}"' in text
    openapi = http.get("/openapi.json").json()
    assert "JudgeRequest" in openapi["components"]["schemas"]
    assert openapi["components"]["schemas"]["JudgeRequest"]["examples"]
    assert http.get("/docs").status_code == 200
    unknown = http.get("/v1/nothing")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "NotFound"


# -- bad input -----------------------------------------------------------------------------------------
def _bomb() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")  # 81 MP in a few KB
    return buf.getvalue()


_HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
_SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("notes.png", b"just some text, not an image", 400),
        ("drawing.svg", _SVG, 400),
        ("photo.heic", _HEIC, 400),
        ("bomb.png", _bomb(), 413),
        ("cut.png", png_bytes((300, 300))[:200], 400),
    ],
)
def test_bad_images_get_the_cli_message(
    http: httpx.Client, tmp_path: Path, name: str, data: bytes, status: int
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    expected = cli_error(path)
    body = {"image": image_b64(data), "image_name": name, **ASK}
    reply = http.post("/v1/judge", json=body)
    assert reply.status_code == status, reply.text
    # over the pixel limit: the InvalidImageError subclass ImageTooLargeError (413 by class)
    assert reply.json()["error"]["type"] == ("ImageTooLargeError" if status == 413 else "InvalidImageError")
    assert reply.json()["error"]["message"] == expected
    upload = http.post("/v1/judge", data={k: str(v) for k, v in ASK.items()}, files={"image": (name, data)})
    assert upload.status_code == status and upload.json()["error"]["message"] == expected


def test_truncated_base64_and_bad_data_urls(http: httpx.Client, red: Path) -> None:
    good = image_b64(red.read_bytes())
    for image in (good[:-3], "data:text/plain;base64," + good, "@@@"):
        reply = http.post("/v1/judge", json={"image": image, **ASK})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["type"] == "InvalidImageError" and error["message"].endswith(": image"), error
        assert "\n" not in error["message"] and error["hint"]


@pytest.mark.parametrize(
    ("changes", "drop", "status", "message"),
    [
        ({}, ["image"], 422, "the request has no 'image'"),
        ({}, ["response"], 422, "the request has no 'response'"),
        ({"IMAGE": "x"}, [], 422, "unknown field 'IMAGE'"),
        ({"image": 5}, [], 422, "image must be text, got a number"),
        ({"instruction": ["q"]}, [], 422, "instruction must be text, got a list"),
        ({"temperature": "hot"}, [], 422, "temperature must be a number, got 'hot'"),
        ({"max_tokens": 1.5}, [], 422, "max_tokens must be an integer, got 1.5"),
        ({"grammar": "yes"}, [], 422, "grammar must be true or false, got 'yes'"),
        ({"temperature": -1}, [], 400, "temperature must be at least 0, got -1"),
        ({"samples": 0}, [], 400, "samples must be at least 1, got 0"),
        ({"response": "  "}, [], 400, "the response is empty"),
        ({"rubric": "no-such"}, [], 400, "unknown rubric 'no-such'; available: "),
        ({"rubric": "../../etc/passwd.toml"}, [], 400, "unknown rubric '../../etc/passwd.toml'"),
        ({"rubric": {"criteria": "c"}}, [], 400, "rubric is missing the field 'score1'"),
    ],
)
def test_bad_fields_get_one_line_4xx(
    http: httpx.Client, red: Path, changes: dict[str, Any], drop: list[str], status: int, message: str
) -> None:
    body: dict[str, Any] = {"image": image_b64(red.read_bytes()), **ASK, **changes}
    for key in drop:
        body.pop(key)
    reply = http.post("/v1/judge", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["message"].startswith(message), error
    assert set(error) == {"type", "message", "hint"} and "\n" not in error["message"]


def _raw(url: str, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """One request on a plain socket (a client that stops sending): the status and the JSON answer."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    return int(top.split()[1]), json.loads(rest[: _length(data)])


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


def test_bodies_that_are_not_json_or_too_large(http: httpx.Client, server: ServeHandle) -> None:
    bad = http.post("/v1/judge", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith(
        "the request body is not valid JSON"
    )
    assert bad.json()["error"]["type"] == "InputError"
    text = http.post("/v1/judge", content=b"hello", headers={"content-type": "text/plain"})
    assert (
        text.status_code == 415 and text.json()["error"]["message"] == "unsupported content type 'text/plain'"
    )
    array = http.post("/v1/judge", json=[1, 2])
    assert array.status_code == 422 and "must be a JSON object" in array.json()["error"]["message"]
    head = b"POST /v1/judge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    status, answer = _raw(server.url, head + b"Content-Length: 40000000\r\n\r\n")
    assert status == 413 and answer["error"]["type"] == "PayloadTooLarge", answer
    limit = 32 * 2**20
    chunk = b"A" * 2**20
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(limit // len(chunk) + 1))
    status, answer = _raw(server.url, head + b"Transfer-Encoding: chunked\r\n\r\n", chunked)
    assert status == 413 and "33,554,432 bytes" in answer["error"]["message"], answer
    form = http.post(
        "/v1/judge", content=b"--x--\r\n", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert form.status_code == 422 and "the request has no" in form.json()["error"]["message"]


def _written(pid: int) -> int:
    """Bytes the process has passed to write() so far (files, pipes and sockets alike)."""
    with open(f"/proc/{pid}/io") as fh:
        return int(next(line for line in fh if line.startswith("wchar:")).split()[1])


def test_a_3mb_upload_is_never_spooled_to_disk(
    http: httpx.Client, server: ServeHandle, spool_dir: Path
) -> None:
    """Starlette's UploadFile would spool this to a temporary file (unnamed: TMPDIR alone would not show it);
    the server's write() total must grow by far less than the upload."""
    from PIL import Image

    noise = Image.frombytes("RGB", (1024, 1024), os.urandom(1024 * 1024 * 3))
    buf = io.BytesIO()
    noise.save(buf, "PNG")
    data = buf.getvalue()
    assert len(data) > 3 * 2**20
    before = _written(server.proc.pid)
    form = {k: str(v) for k, v in ASK.items()}
    reply = http.post("/v1/judge", data=form, files={"image": ("noise.png", data)})
    assert reply.status_code == 200, reply.text
    assert reply.json()["image"] == "noise.png"
    as_json = http.post("/v1/judge", json={"image": image_b64(data), **ASK})
    assert as_json.status_code == 200, as_json.text
    assert _written(server.proc.pid) - before < 256 * 1024  # two answers of a few KB each
    assert list(spool_dir.iterdir()) == []


# -- auth ----------------------------------------------------------------------------------------------
def test_api_key_is_required_except_for_healthz(tiny_gguf: tuple[Path, Path], red: Path) -> None:
    with running_serve(*tiny_gguf, api_key="s3cret-key") as keyed:
        body = {"image": image_b64(red.read_bytes()), **ASK}
        none = httpx.post(f"{keyed.url}/v1/judge", json=body)
        assert none.status_code == 401 and none.json()["error"]["message"] == "no API key given"
        assert none.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.post(f"{keyed.url}/v1/judge", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "wrong API key"
        assert httpx.get(f"{keyed.url}/v1/model").status_code == 401
        assert httpx.get(f"{keyed.url}/healthz").json() == {"status": "ok"}
        right = httpx.post(f"{keyed.url}/v1/judge", json=body, headers=keyed.headers, timeout=120)
        assert right.status_code == 200 and right.json()["score"] in (1, 2, 3, 4, 5, None)
        assert keyed.stop() == 0


def test_a_public_host_without_a_key_refuses_to_start(tiny_gguf: tuple[Path, Path], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGEJUDGE_SERVE_API_KEY"}
    argv = cli("serve", "--model", str(tiny_gguf[0]), "--host", "0.0.0.0", "--port", "0")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines[0] == (
        "error: refusing to listen on 0.0.0.0 without an API key: anyone who can reach it could use the judge"
    )
    assert len(lines) == 2 and lines[1].startswith("hint: give --api-key-file")
    key = tmp_path / "key"
    key.write_text("")
    empty = subprocess.run(
        [*argv, "--api-key-file", str(key)], capture_output=True, text=True, timeout=60, check=False
    )
    assert empty.returncode == 2 and "holds no key" in empty.stderr


def test_sigterm_exits_0_and_prints_the_url(tiny_gguf: tuple[Path, Path]) -> None:
    with running_serve(*tiny_gguf) as handle:
        assert handle.stdout.strip() == handle.url
        assert handle.stop() == 0
        assert handle.stderr.strip().splitlines()[-1] == "edgejudge serve: stopped"


def test_a_port_in_use_is_a_one_line_error(tiny_gguf: tuple[Path, Path]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = cli("serve", "--model", str(tiny_gguf[0]), "--port", str(port))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert f"error: cannot listen on http://127.0.0.1:{port} (the address is in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_prompt_too_long_is_a_400_with_the_cli_message(
    http: httpx.Client, red: Path, tiny_gguf: tuple[Path, Path]
) -> None:
    long = "very long answer " * 1500
    argv = cli("judge", red.name, "-m", str(tiny_gguf[0]), "-i", "q", "--response", long, "--json")
    done = subprocess.run(argv, cwd=red.parent, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    expected = next(x for x in done.stderr.splitlines() if x.startswith("error: ")).removeprefix("error: ")
    reply = http.post("/v1/judge", json={"image": image_b64(red.read_bytes()), "image_name": "red.png",
                                         "instruction": "q", "response": long})  # fmt: skip
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "ContextOverflowError" and error["message"] == expected


@pytest.mark.parametrize(
    ("path", "changes", "status", "message"),
    [
        ("/v1/judge/batch", {"responses": []}, 422, "responses must hold at least 1 item(s), got 0"),
        ("/v1/judge/batch", {"responses": ["a"] * 65}, 422, "responses must hold at most 64 item(s), got 65"),
        ("/v1/judge/batch", {"responses": ["a", 3]}, 422, "responses.1 must be text, got a number"),
        ("/v1/judge/batch", {"rubric": "ocr-accuracy", "rubrics": ["ocr-accuracy"]}, 400,
         "give rubric or rubrics"),
        ("/v1/judge/policy", {"review_band": [0.3]}, 422, "the review band must be two numbers, got [0.3]"),
        ("/v1/judge/policy", {"review_band": [0.8, 0.2]}, 400, "the review band 0.8,0.2 is not within 0..1"),
        ("/v1/judge/policy", {"policy": "nope"}, 400, "unknown policy 'nope'; built-in: "),
        ("/v1/judge/policy", {"policy": {"name": "p"}}, 400, "the request's policy: "),
        ("/v1/judge/policy", {"policy": "figure-grading", "instruction": None}, 400,
         "policy 'figure-grading' gives no instruction for rule(s) "),
    ],
)  # fmt: skip
def test_bad_batch_and_policy_fields(
    http: httpx.Client, red: Path, path: str, changes: dict[str, Any], status: int, message: str
) -> None:
    body: dict[str, Any] = {"image": image_b64(red.read_bytes()), "max_tokens": 8}
    if path.endswith("batch"):
        body |= {"instruction": "q", "responses": ["a"]}
    else:
        body |= {"response": "r", "policy": "marketplace-listing"}
    reply = http.post(path, json={**body, **changes})
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["message"].startswith(message), reply.json()


def test_the_request_settings_are_the_generation_settings() -> None:
    """Every generation setting can be set per request, under its own name, and nothing else."""
    from edgejudge.serve.schema import SETTING_NAMES, JudgeRequest
    from edgejudge.settings import SETTINGS

    settable = {name for name in JudgeRequest.model_fields if name in SETTINGS}
    assert settable == set(SETTING_NAMES)

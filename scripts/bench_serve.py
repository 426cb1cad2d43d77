#!/usr/bin/env python3
"""Benchmark: one ``edgejudge serve`` shared by 1, 4 and 16 concurrent clients, with and without same-image
coalescing, against the same requests judged by separate ``edgejudge judge`` processes, in the same run:
requests per minute, p50/p95 latency (seconds from sending a request to its answer), the share of requests
decoded in a coalesced group (the verdicts' ``timings.parallel`` > 1) and of the prompt reused from the KV
cache.

Rows (each printed as soon as it is measured):

- **separate processes**: every request is one ``edgejudge judge --json`` process (load the pair, judge,
  exit), ``--process-clients`` of them at a time with ``--threads`` split between them: what each script
  pays without a shared server;
- **serve, coalescing** / **serve, --no-coalesce**: one server (``--threads``, ``--parallel``) per mode, both
  started first and measured in turn for each client count (so a pair of rows sees the same machine load;
  the idle one uses no CPU), warmed before each row by one unmeasured request per image (a server that has
  been running holds the image's prefix); the requests spread round-robin over the clients, each client
  sending its requests one after another (``httpx``, one connection each).

The requests: ``--images`` synthetic pictures (default 1), request i on image i % images with its own
response (as ``bench_scale.py``: the ``bench_judge.py`` model, ~1.1B LLaMA + CLIP-L/336, Q4_K_M, built
once and cached in ``--bench-dir``; the ``vqa-helpfulness`` rubric trimmed to ``--rubric-tokens``; a
reference answer), temperature 0, one seed (equal settings are what lets requests coalesce),
``--max-tokens``; per server row one request per client (at least 2) unless ``--requests``. At temperature
0 the last column counts the requests whose verdict text and score equal the first row's (on this
random-weight model near-flat distributions let greedy texts differ between a cold prompt, a reused prefix
and a parallel group: float rounding, as the README's parallel-sequences section says). Exits 0 (1 when a
request failed).

    python scripts/bench_serve.py                       # the short default (~6 min on 2 quiet cores)
    python scripts/bench_serve.py --images 2 --requests 32 --process-requests 4 --process-clients 1,4
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_judge import INSTRUCTION, REFERENCE, RESPONSES, ensure_model, machine_info  # noqa: E402
from bench_scale import bench_rubric, free_port  # noqa: E402

CLI = [sys.executable, "-c", "from edgejudge.cli import main; main()"]


@dataclass
class Row:
    name: str
    clients: int
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    failed: int = 0
    texts: dict[int, str] = field(default_factory=dict)
    scores: dict[int, int | None] = field(default_factory=dict)
    parallel: dict[int, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    reused_tokens: int = 0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def per_min(self) -> float:
        return 60.0 * self.ok / self.wall_s if self.wall_s else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def record(row: Row, index: int, verdict: dict[str, Any], latency: float) -> None:
    row.latencies.append(latency)
    row.texts[index] = verdict["raw_output"]
    row.scores[index] = verdict["score"]
    timings = verdict["samples"][0]["timings"]
    row.parallel[index] = int(timings.get("parallel", 1))
    row.prompt_tokens += int(timings.get("prompt_tokens", 0))
    row.reused_tokens += int(timings.get("reused_tokens", 0))


# -- the requests --------------------------------------------------------------------------------------------
def make_requests(
    folder: Path, count: int, images: int, rubric: dict[str, Any], max_tokens: int
) -> list[dict]:
    from edgejudge.images import synthetic_image

    paths = []
    for k in range(images):
        path = folder / f"image-{k}.png"
        synthetic_image(336, seed=100 + k).save(path)
        paths.append(path)
    requests = []
    for i in range(count):
        path = paths[i % images]
        requests.append(
            {
                "path": path,
                "body": {
                    "image": base64.b64encode(path.read_bytes()).decode("ascii"),
                    "image_name": f"request-{i}",
                    "instruction": INSTRUCTION,
                    "response": RESPONSES[i % len(RESPONSES)] + f" (answer {i})",
                    "reference": REFERENCE,
                    "rubric": rubric,
                    "temperature": 0.0,
                    "max_tokens": max_tokens,
                    "seed": 0,  # equal settings (the seed included) are what lets requests coalesce
                },
            }
        )
    return requests


def spread(count: int, clients: int) -> list[list[int]]:
    return [list(range(c, count, clients)) for c in range(clients)]


# -- separate processes --------------------------------------------------------------------------------------
def run_processes(
    requests: list[dict], clients: int, args: argparse.Namespace, model: tuple[Path, Path], rubric_file: Path
) -> Row:
    row = Row("separate `edgejudge judge` processes", clients)
    threads = max(1, args.threads // clients)
    lock = threading.Lock()

    def client(indices: list[int]) -> None:
        for i in indices:
            body = requests[i]["body"]
            argv = [
                *CLI, "judge", str(requests[i]["path"]), "-i", body["instruction"],
                "--response", body["response"], "--reference", body["reference"], "-r", str(rubric_file),
                "--model", str(model[0]),
                "--mmproj", str(model[1]), "--temperature", "0", "--max-tokens", str(body["max_tokens"]),
                "--seed", str(body["seed"]), "--threads", str(threads), "--n-ctx", str(args.n_ctx), "--json",
            ]  # fmt: skip
            t0 = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
            latency = time.perf_counter() - t0
            with lock:
                if done.returncode != 0:
                    row.failed += 1
                    print(
                        f"  request {i}: exit {done.returncode}: {done.stderr.strip()[-300:]}",
                        file=sys.stderr,
                    )
                    continue
                record(row, i, json.loads(done.stdout), latency)

    run_clients(row, client, spread(len(requests), clients))
    return row


# -- one server ----------------------------------------------------------------------------------------------
class Server:
    def __init__(self, model: tuple[Path, Path], args: argparse.Namespace, coalesce: bool, log: Path) -> None:
        import httpx

        self.url = f"http://127.0.0.1:{free_port()}"
        argv = [
            *CLI, "serve", "--model", str(model[0]), "--mmproj", str(model[1]), "--host", "127.0.0.1",
            "--port", self.url.rsplit(":", 1)[1], "--threads", str(args.threads), "--parallel",
            str(args.parallel), "--n-ctx", str(args.n_ctx), "--max-queue", "64",
        ]  # fmt: skip
        if not coalesce:
            argv.append("--no-coalesce")
        elif args.gather_ms is not None:
            argv += ["--gather-ms", str(args.gather_ms)]
        self._log = log.open("w")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + args.timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"edgejudge serve exited {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"edgejudge serve did not answer /healthz within {args.timeout} s")
            time.sleep(0.5)

    def metrics(self, words: tuple[str, ...] = ("coalesced", "groups", "cancelled", "reuse")) -> list[str]:
        import httpx

        try:
            text = httpx.get(self.url + "/metrics", timeout=10).text
        except httpx.HTTPError:
            return []
        return [
            line for line in text.splitlines() if not line.startswith("#") and any(w in line for w in words)
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def run_server(requests: list[dict], clients: int, server: Server, name: str, timeout: float) -> Row:
    import httpx

    row = Row(name, clients)
    lock = threading.Lock()

    def client(indices: list[int]) -> None:
        with httpx.Client(base_url=server.url, timeout=timeout) as http:
            for i in indices:
                t0 = time.perf_counter()
                try:
                    answer = http.post("/v1/judge", json=requests[i]["body"])
                except httpx.HTTPError as err:
                    with lock:
                        row.failed += 1
                    print(f"  request {i}: {err!r}", file=sys.stderr)
                    continue
                latency = time.perf_counter() - t0
                with lock:
                    if answer.status_code != 200:
                        row.failed += 1
                        print(
                            f"  request {i}: HTTP {answer.status_code}: {answer.text[:300]}", file=sys.stderr
                        )
                        continue
                    record(row, i, answer.json(), latency)

    run_clients(row, client, spread(len(requests), clients))
    return row


def warm_up(server: Server, requests: list[dict], timeout: float) -> None:
    """One request per image, not measured: every row starts with the image's prefix in the KV cache and
    its embedding cached, as on a server that has been running (the separate processes start cold)."""
    import httpx

    for request in requests:
        body = {**request["body"], "response": "A warm-up answer.", "max_tokens": 1}
        httpx.post(server.url + "/v1/judge", json=body, timeout=timeout).raise_for_status()


def run_clients(row: Row, client: Any, shares: list[list[int]]) -> None:
    workers = [threading.Thread(target=client, args=(share,)) for share in shares]
    t0 = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    row.wall_s = time.perf_counter() - t0


# -- the table -----------------------------------------------------------------------------------------------
HEADER = (
    "| configuration | clients | requests ok | wall s | requests/min | × separate processes | p50 s | p95 s "
    "| in a coalesced group | prefix reused | same text / score as row 1 |\n" + "|---" * 11 + "|"
)


def print_row(row: Row, base: Row | None, first: Row | None) -> None:
    ratio = f"{row.per_min / base.per_min:.2f}×" if base is not None and base.per_min else "-"
    grouped = sum(1 for p in row.parallel.values() if p > 1)
    reused = 100 * row.reused_tokens / row.prompt_tokens if row.prompt_tokens else 0.0
    same = "-"
    if first is not None:
        common = [i for i in row.texts if i in first.texts]
        texts = sum(row.texts[i] == first.texts[i] for i in common)
        scores = sum(row.scores[i] == first.scores[i] for i in common)
        same = f"{texts}/{len(common)} / {scores}/{len(common)}"
    print(
        f"| {row.name} | {row.clients} | {row.ok}/{row.ok + row.failed} | {row.wall_s:.1f} "
        f"| {row.per_min:.2f} | {ratio} | {percentile(row.latencies, 50):.1f} "
        f"| {percentile(row.latencies, 95):.1f} "
        f"| {grouped}/{row.ok} | {reused:.0f} % | {same} |",
        flush=True,
    )


def counts(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{name}: give whole numbers separated by commas, e.g. 1,4,16") from None
    if not values or min(values) < 1:
        raise SystemExit(f"{name}: give at least one number, each at least 1")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bench-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "edgejudge-bench"
    )
    parser.add_argument("--quant", default="Q4_K_M", choices=("Q4_K_M", "Q8_0", "Q5_K_M", "F16"))
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients per server row")
    parser.add_argument(
        "--requests", type=int, default=0, help="requests per server row (0: one per client, at least 2)"
    )
    parser.add_argument("--images", type=int, default=1, help="distinct images the requests are about")
    parser.add_argument("--process-clients", default="1", help="concurrent judge processes per baseline row")
    parser.add_argument("--process-requests", type=int, default=1, help="requests of a baseline row")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rubric-tokens", type=int, default=60, help="trim the rubric (0: as written)")
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads of the server (and in all for processes)"
    )
    parser.add_argument("--parallel", type=int, default=4, help="the server's parallel sequences")
    parser.add_argument("--n-ctx", type=int, default=8192, help="context (room for --parallel sequences)")
    parser.add_argument("--gather-ms", type=float, default=None, help="the server gather window")
    parser.add_argument(
        "--only", default="processes,coalesce,no-coalesce", help="rows to run, comma-separated"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds for one request or a server start"
    )
    args = parser.parse_args()
    clients, process_clients = (
        counts(args.clients, "--clients"),
        counts(args.process_clients, "--process-clients"),
    )
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    if unknown := set(wanted) - {"processes", "coalesce", "no-coalesce"}:
        parser.error(f"unknown row kind(s) {sorted(unknown)}; choose from processes, coalesce, no-coalesce")
    if args.requests < 0 or args.images < 1 or args.process_requests < 1:
        parser.error("--images and --process-requests must be at least 1, --requests at least 0")

    from edgejudge.native.log import set_native_logging

    set_native_logging(False)
    model = ensure_model(args.bench_dir, args.quant)
    rubric = bench_rubric(model[0], args.rubric_tokens)
    per_row = {c: args.requests or max(2, c) for c in clients}
    total = max(args.process_requests, *per_row.values(), *process_clients)
    failed = 0
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgejudge-bench-serve-") as tmp:
        folder = Path(tmp)
        requests = make_requests(folder, total, args.images, rubric, args.max_tokens)
        rubric_file = folder / "rubric.json"
        rubric_file.write_text(json.dumps(rubric), encoding="utf-8")
        print(
            f"\n## edgejudge serve ({args.images} images, max_tokens {args.max_tokens}, temperature 0, "
            f"--threads {args.threads}, --parallel {args.parallel})\n\n{machine_info()}\n\n{HEADER}",
            flush=True,
        )
        base: Row | None = None
        first: Row | None = None
        if "processes" in wanted:
            for c in process_clients:
                print(f"running {c} judge process(es) at a time ...", file=sys.stderr, flush=True)
                row = run_processes(requests[: max(args.process_requests, c)], c, args, model, rubric_file)
                base, first = base or row, first or row
                failed += row.failed
                print_row(row, base, first)
                print(f"  ({time.perf_counter() - began:.0f} s so far)", file=sys.stderr, flush=True)
        names = {"coalesce": "serve, coalescing", "no-coalesce": "serve, --no-coalesce"}
        kinds = [kind for kind in names if kind in wanted]
        with ExitStack() as stack:  # both servers up at once: each client count measured on both in turn
            servers = {}
            for kind in kinds:
                server = Server(model, args, kind == "coalesce", folder / f"serve-{kind}.log")
                stack.callback(server.stop)
                servers[kind] = server
            for c in clients:
                for kind in kinds:
                    print(f"running {names[kind]} with {c} client(s) ...", file=sys.stderr, flush=True)
                    warm_up(servers[kind], requests[: args.images], args.timeout)
                    row = run_server(requests[: per_row[c]], c, servers[kind], names[kind], args.timeout)
                    first = first or row
                    failed += row.failed
                    print_row(row, base, first)
                    print(f"  ({time.perf_counter() - began:.0f} s so far)", file=sys.stderr, flush=True)
            for kind, server in servers.items():
                for line in server.metrics():
                    print(f"  /metrics ({kind}) {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

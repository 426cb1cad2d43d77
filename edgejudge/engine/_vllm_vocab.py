"""What ``VllmEngine`` learns from a vLLM server when it connects, through its own tokenizer endpoints
(``/tokenize``, ``/detokenize``): nothing about the vocabulary is hard-coded.

- ``served_model``: the model to use among ``GET /v1/models`` (the one named, or the only one) and its
  ``max_model_len``;
- ``read_vocabulary``: every token's text, read with ``/detokenize`` in chunks (each id between two
  separator tokens, so a piece keeps its leading space), until a whole chunk is empty (past the vocabulary);
  from it the score digits (``DigitIds``: every id whose text is exactly ``"d"`` or ``" d"``, byte-fallback
  tokens included) and the *control tokens*: ids whose text looks like one (``<...>``, ``<|...|>``) and
  that the server's tokenizer reads back as that one id, alone and after a space (``</s>``, ``<s>``,
  ``<image>``, ``<pad>``, ``<unk>`` for LLaVA). A normal vocabulary piece of that shape (an HTML tag, say)
  takes a preceding space into itself, so it is not taken for a control token;
- ``check_template``: the served chat template renders BOS + the raw text of the messages, nothing else
  (edgejudge's llava-hf export does; the hub's llava-hf template adds ``USER:``/``ASSISTANT:`` and would
  silently change the prompt), for a prompt and for a continued assistant message (the forced tail);
- ``image_tokens``: how many prompt positions the server gives one image, from a probe image.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ..errors import EngineError
from ._http import HttpClient, ServerResponseError
from ._vllm_request import DigitIds

__all__ = ["ServedModel", "Vocabulary", "served_model", "read_vocabulary", "check_template", "image_tokens"]

#: Ids per ``/detokenize`` request of the vocabulary scan.
SCAN_CHUNK = 2048
#: The most ids the scan reads (a vocabulary larger than this is refused: no model edgejudge serves has one).
SCAN_LIMIT = 1 << 20
_CONTROL_SHAPE = re.compile(r"<[^<>\s]{1,64}>|<\|[^\s]{1,64}\|>")
_TEMPLATE_PROBE = ("Judge this. USER: x\n", "ASSISTANT: y")


@dataclass(frozen=True)
class ServedModel:
    """The served model a request names (``model``) and its context window (``max_model_len``)."""

    name: str
    root: str
    n_ctx: int


def served_model(client: HttpClient, wanted: Sequence[str], folder: str | None = None) -> ServedModel:
    """The model among the server's ``/v1/models`` whose id or root is one of ``wanted`` (names, or paths
    the server may have been started with), else whose root folder is named ``folder`` (the same export
    copied to another machine), or the only one when ``wanted`` is empty."""
    data = client.get_json("/v1/models")
    listed = data.get("data") if isinstance(data, dict) else None
    models = [m for m in listed if isinstance(m, dict) and "id" in m] if isinstance(listed, list) else []
    if not models:
        raise EngineError(
            f"{client.url} lists no served model at /v1/models", hint="check that it is a vLLM server"
        )
    found = [m for m in models if m.get("id") in wanted or m.get("root") in wanted]
    if not found and folder is not None:
        found = [m for m in models if PurePosixPath(str(m.get("root") or m["id"])).name == folder]
    if not wanted:
        if len(models) > 1:
            names = ", ".join(str(m.get("id")) for m in models)
            raise EngineError(f"{client.url} serves several models ({names})", hint="name the model to use")
        found = models[:1]
    if not found:
        names = ", ".join(str(m.get("id")) for m in models)
        raise EngineError(
            f"{client.url} does not serve {wanted[0]!r} (it serves {names})",
            hint="name a served model (or its llava-hf folder), or start the server on it",
        )
    model = found[0]
    n_ctx = model.get("max_model_len")
    if not isinstance(n_ctx, int) or n_ctx < 1:
        raise EngineError(
            f"{client.url} gives no max_model_len for {model.get('id')!r}", hint="use vLLM 0.10 or later"
        )
    return ServedModel(str(model["id"]), str(model.get("root") or model["id"]), n_ctx)


def tokenize(client: HttpClient, model: str, text: str, *, special: bool = False) -> list[int]:
    """The server's token ids of ``text`` (``special``: with the tokenizer's own BOS)."""
    answer = client.post_json("/tokenize", {"model": model, "prompt": text, "add_special_tokens": special})
    return _tokens(client, answer)


def tokenize_chat(client: HttpClient, body: dict[str, Any]) -> list[int]:
    """The server's token ids of a chat request's prompt (messages rendered by its chat template)."""
    keys = ("model", "messages", "add_generation_prompt", "continue_final_message")
    return _tokens(client, client.post_json("/tokenize", {k: body[k] for k in keys if k in body}))


def _tokens(client: HttpClient, answer: Any) -> list[int]:
    tokens = answer.get("tokens") if isinstance(answer, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise ServerResponseError(
            f"{client.url}: /tokenize answered without a list of token ids",
            url=client.url,
            hint="check that the URL is a vLLM server's",
        )
    return tokens


def _detokenize(client: HttpClient, model: str, ids: list[int]) -> str:
    return str(client.post_json("/detokenize", {"model": model, "tokens": ids})["prompt"])


@dataclass(frozen=True)
class Vocabulary:
    """What the engine needs of the served vocabulary (see the module docstring)."""

    digits: DigitIds
    control: dict[int, str]  # id → text of each control token
    bos: int
    pieces: tuple[str, ...]  # id → its text after another token (a piece keeps its leading space)


def _pieces(client: HttpClient, model: str, sep: int, sep_text: str, ids: list[int]) -> list[str]:
    """The text of each id (between separators); halves the chunk where a piece holds the separator."""
    text = _detokenize(client, model, [x for i in ids for x in (sep, i)] + [sep])
    parts = text.split(sep_text)
    if len(parts) == len(ids) + 2 and parts[0] == "" and parts[-1] == "":
        return parts[1:-1]
    if len(ids) == 1:
        if text.startswith(sep_text) and text.endswith(sep_text) and len(text) >= 2 * len(sep_text):
            return [text[len(sep_text) : len(text) - len(sep_text)]]
        return [""]  # unreadable on its own: not a digit, not a control token
    half = len(ids) // 2
    return _pieces(client, model, sep, sep_text, ids[:half]) + _pieces(
        client, model, sep, sep_text, ids[half:]
    )


def _separator(client: HttpClient, model: str) -> tuple[int, str]:
    # a piece of its own first: a byte token ("\n" in SentencePiece) merges with byte tokens beside it
    for candidate in ("|", "#", "~", "@", "\n"):
        ids = tokenize(client, model, candidate)  # may start with a space prefix: the last is the character
        if ids and _detokenize(client, model, [ids[-1], ids[-1], ids[-1]]) == candidate * 3:
            return ids[-1], candidate
    raise EngineError(
        f"{client.url}: no one-token separator in the served vocabulary", hint="report this model"
    )


def _is_control(client: HttpClient, model: str, token: int, text: str) -> bool:
    """Whether the tokenizer reads ``text`` as the one token ``token`` even after a space (an added token is
    matched in the raw text; a normal piece would take the space into itself)."""
    if tokenize(client, model, text) != [token]:
        return False
    spaced = tokenize(client, model, " " + text)
    return len(spaced) >= 2 and spaced[-1] == token


def read_vocabulary(client: HttpClient, model: str) -> Vocabulary:
    """Scan the served vocabulary (see the module docstring)."""
    sep, sep_text = _separator(client, model)
    texts: list[str] = []
    while True:
        if len(texts) >= SCAN_LIMIT:
            raise EngineError(f"{client.url}: the served vocabulary has over {SCAN_LIMIT} tokens", hint=None)
        chunk = _pieces(client, model, sep, sep_text, list(range(len(texts), len(texts) + SCAN_CHUNK)))
        if not any(chunk):
            break
        texts.extend(chunk)
    while texts and not texts[-1]:
        texts.pop()
    wanted = {str(d): d for d in range(1, 6)}
    digits: list[list[int]] = [[] for _ in range(5)]
    spaced: list[list[int]] = [[] for _ in range(5)]
    control: dict[int, str] = {}
    for token, text in enumerate(texts):
        if text in wanted:
            digits[wanted[text] - 1].append(token)
        elif len(text) == 2 and text[0] == " " and text[1] in wanted:
            spaced[wanted[text[1]] - 1].append(token)
        elif _CONTROL_SHAPE.fullmatch(text) and _is_control(client, model, token, text):
            control[token] = text
    if not all(digits):
        missing = [str(d + 1) for d in range(5) if not digits[d]]
        raise EngineError(
            f"{client.url}: no token renders the digit(s) {', '.join(missing)} in the served vocabulary",
            hint="serve a LLaVA-1.5 judge (the llava-hf export of a Prometheus-Vision checkpoint)",
        )
    with_bos = tokenize(client, model, "a", special=True)
    plain = tokenize(client, model, "a")
    if len(with_bos) != len(plain) + 1 or with_bos[1:] != plain or with_bos[0] not in control:
        raise EngineError(
            f"{client.url}: the served tokenizer adds no BOS token",
            hint="serve the llava-hf export of the judge",
        )
    found = DigitIds(tuple(map(tuple, digits)), tuple(map(tuple, spaced)))
    return Vocabulary(found, control, with_bos[0], tuple(texts))


def check_template(client: HttpClient, model: str, bos: int) -> None:
    """Refuse a served chat template that does not render BOS + the raw text (module docstring)."""
    user, assistant = _TEMPLATE_PROBE
    cases = (
        ([{"role": "user", "content": user}], False, user),
        (
            [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
            True,
            user + assistant,
        ),
    )
    for messages, cont, text in cases:
        body = {
            "model": model,
            "messages": messages,
            "add_generation_prompt": False,
            "continue_final_message": cont,
        }
        if tokenize_chat(client, body) != [bos, *tokenize(client, model, text)]:
            raise EngineError(
                f"{client.url}: the served chat template does not render the raw prompt (BOS + the text)",
                hint="serve edgejudge's llava-hf export (its chat template does), started with "
                "--chat-template-content-format string",
            )


def image_tokens(client: HttpClient, model: str, image_id: int, image_text: str, side: int) -> int:
    """Prompt positions the server gives one ``side`` × ``side`` image (counted in a probe prompt that
    holds ``image_text``, the image token, as every request does)."""
    from ..images import png_bytes

    png = base64.b64encode(png_bytes(bytes(side * side * 3), side, side)).decode("ascii")
    url = "data:image/png;base64," + png
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": image_text + "x"}]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "add_generation_prompt": False,
    }
    ids = tokenize_chat(client, body)
    n = ids.count(image_id)
    if n < 1:
        raise EngineError(
            f"{client.url}: a prompt with an image holds no image token",
            hint="start the server with --chat-template-content-format string",
        )
    return n

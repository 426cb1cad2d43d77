"""The local text model's facts for the llama-server engine, read from its GGUF in pure Python (``gguf``;
no native runtime): its identity (file name, tensor bytes, parameter and vocabulary counts, which the
server's ``/v1/models`` reports too), and its vocabulary as llama.cpp renders it.

``TextVocab.piece(t)`` is the bytes llama.cpp's ``llama_token_to_piece(..., special=False)`` gives for a
SentencePiece ("llama") vocabulary: a normal token's text with ``▁`` as a space, a byte token's byte, a
user-defined token's text, nothing for control, unknown and unused tokens. The engine decodes the
server's token ids with it, so its text is the local engine's byte for byte.

``special_texts`` are the texts llama-server would read as *tokens* in a prompt (it tokenizes prompts with
special-token parsing; the local engine never does): the control and unknown tokens' texts. The digit
groups are the local engine's (``engine._reading.DigitTokens``, the one rule every engine uses).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import EngineError
from ._reading import DigitTokens, TextStream

__all__ = ["TextModelFacts", "TextVocab", "TextDecoder", "read_text_model"]

#: Generated text as the local engine builds it (``engine._reading.TextStream``, without a callback).
TextDecoder = TextStream

# llama.cpp's token types (GGUF tokenizer.ggml.token_type)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_BYTE_TOKEN = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


@dataclass(frozen=True)
class TextModelFacts:
    """What identifies a text model file: ``name`` (file name), ``tensor_bytes`` (llama.cpp's model size),
    ``n_params``, ``n_vocab``."""

    name: str
    tensor_bytes: int
    n_params: int
    n_vocab: int


class TextVocab:
    """Token pieces, special texts, end-of-generation ids, whether prompts start with BOS (``add_bos``),
    the byte-fallback token of each byte value (``byte_ids``) and the score digits of one vocabulary.
    ``grammar_pieces`` are the pieces llama.cpp's grammar matches: control and unknown tokens as their
    text (``<s>``), which the grammar lets through as text, unlike ``pieces`` (what users see)."""

    def __init__(
        self,
        pieces: list[bytes],
        special_texts: list[str],
        eog: set[int],
        add_bos: bool = True,
        byte_ids: dict[int, int] | None = None,
        grammar_pieces: list[bytes] | None = None,
    ) -> None:
        self.pieces = pieces
        self.grammar_pieces = grammar_pieces if grammar_pieces is not None else pieces
        self.add_bos = add_bos
        self.byte_ids = byte_ids or {}
        self.n_vocab = len(pieces)
        self.special_texts = tuple(sorted(set(special_texts), key=len, reverse=True))
        self.eog = frozenset(eog)
        found = DigitTokens(self)
        self.digits, self.spaced_digits = found.digits, found.spaced_digits
        self.score_groups = found.score_groups

    def piece(self, token: int) -> bytes:
        return self.pieces[token] if 0 <= token < self.n_vocab else b""

    def special_in(self, text: str) -> str | None:
        """The first special text (control/unknown token) ``text`` contains, or None."""
        for special in self.special_texts:
            if special and special in text:
                return special
        return None


def _piece(text: bytes, kind: int) -> bytes:
    if kind in (_CONTROL, _UNKNOWN, _UNUSED):
        return b""
    if kind == _BYTE:
        match = _BYTE_TOKEN.fullmatch(text)
        return bytes([int(match.group(1), 16)]) if match else b""
    if kind == _USER_DEFINED:
        return text
    return text.replace("\u2581".encode(), b" ")


def read_text_model(path: Path) -> tuple[TextModelFacts, TextVocab]:
    """The facts and vocabulary of the text GGUF at ``path``; EngineError when it has no SentencePiece
    vocabulary (the only kind this engine decodes, as LLaVA and Prometheus-Vision use)."""
    from ..judgefile import open_gguf

    reader = open_gguf(path, error=EngineError, hint="pass the text model's .gguf")
    fields = reader.fields

    def scalar(key: str) -> object:
        fld = fields.get(key)
        return fld.contents() if fld is not None and fld.types else None

    model = scalar("tokenizer.ggml.model")
    tokens, types = fields.get("tokenizer.ggml.tokens"), fields.get("tokenizer.ggml.token_type")
    if model != "llama" or tokens is None:
        raise EngineError(
            f"{path.name} has a {model or 'missing'} vocabulary; the llama-server engine reads SentencePiece "
            "('llama') vocabularies only",
            hint="judge this model with the local engine",
        )
    texts = [bytes(tokens.parts[i]) for i in tokens.data]
    kinds = [int(types.parts[i][0]) for i in types.data] if types is not None else [_NORMAL] * len(texts)
    pieces = [_piece(text, kind) for text, kind in zip(texts, kinds, strict=True)]
    special = [
        text.decode("utf-8", "replace")
        for text, kind in zip(texts, kinds, strict=True)
        if kind in (_CONTROL, _UNKNOWN)
    ]
    eog = {
        int(v)
        for v in (scalar("tokenizer.ggml.eos_token_id"), scalar("tokenizer.ggml.eot_token_id"))
        if isinstance(v, int)
    }
    facts = TextModelFacts(
        name=path.name,
        tensor_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        n_params=sum(int(t.n_elements) for t in reader.tensors),
        n_vocab=len(pieces),
    )
    add_bos = scalar("tokenizer.ggml.add_bos_token")
    byte_ids: dict[int, int] = {}
    for token, (piece, kind) in enumerate(zip(pieces, kinds, strict=True)):
        if kind == _BYTE and len(piece) == 1:
            byte_ids.setdefault(piece[0], token)
    grammar_pieces = [
        text if kind in (_CONTROL, _UNKNOWN) else piece
        for text, kind, piece in zip(texts, kinds, pieces, strict=True)
    ]
    return facts, TextVocab(pieces, special, eog, add_bos is not False, byte_ids, grammar_pieces)

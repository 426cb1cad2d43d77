"""The tokenizer of a llava-hf export: the source's SentencePiece model checked and extended with ``<image>``
and ``<pad>``, the fast-tokenizer ``tokenizer.json``, its configs, and the raw-prompt chat template.

The vocabulary grows by two added tokens, ``<image>`` and ``<pad>``, at the first ids after the
checkpoint's (32000 and 32001 for LLaVA-1.5), as in the hub's llava-hf checkpoints. ``tokenizer.json`` is
built from the SentencePiece model without the ``tokenizers`` package: a byte-fallback BPE whose merges come
from the pieces and their scores (transformers' ``SentencePieceExtractor`` rule), and the normalizer of
LLaVA's own prompt tokenization: every text segment around an added token gets SentencePiece's dummy ``▁``
prefix, as when LLaVA (and llama.cpp's mtmd, hence edgejudge's local engine) tokenize the text before and
after the image separately. The chat template renders the raw prompt: BOS, then the text of the messages,
nothing else. Pure functions to JSON-ready dicts; nothing here writes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fs import read_regular
from ..errors import ConversionError
from .limits import MAX_TOKENIZER_BYTES, read_json_file, shown

__all__ = [
    "IMAGE_TOKEN",
    "PAD_TOKEN",
    "CHAT_TEMPLATE",
    "SourceTokenizer",
    "read_source_tokenizer",
    "tokenizer_files",
]

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
#: BOS, then each message's text (a string, or the text parts of a list), nothing else: the caller sends
#: the complete prompt, ``<image>`` included, as one message.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
)
_SP_NORMAL, _SP_SPECIAL, _SP_BYTE = "normal", "special", "byte"
_NORMALIZE_PROBE = "Ａ ① é  x\t"


@dataclass(frozen=True)
class SourceTokenizer:
    """The checkpoint's SentencePiece vocabulary and special tokens."""

    model_bytes: bytes
    pieces: tuple[str, ...]
    scores: tuple[float, ...]
    kinds: tuple[str, ...]  # "normal" | "special" (unk/control) | "byte"
    bos: int
    eos: int
    unk: int
    add_prefix_space: bool
    config: Mapping[str, Any]  # tokenizer_config.json as found ({} when absent)
    generation: Mapping[str, Any]  # generation_config.json as found ({} when absent)

    @property
    def image_id(self) -> int:
        return len(self.pieces)

    @property
    def pad_id(self) -> int:
        return len(self.pieces) + 1


def _json(path: Path) -> dict[str, Any]:
    try:
        present = path.is_file()
    except (OSError, ValueError):
        present = False
    if not present:
        return {}
    data = read_json_file(path, path.name, hint=f"repair or re-download {path.name}")
    if not isinstance(data, dict):
        raise ConversionError(f"{path.name} is not a JSON object", hint=f"repair or re-download {path.name}")
    return data


def _added_ids(directory: Path, tok_cfg: Mapping[str, Any]) -> dict[int, str]:
    added: dict[int, str] = {}
    for text, idx in _json(directory / "added_tokens.json").items():
        if isinstance(idx, int) and not isinstance(idx, bool):
            added[idx] = str(text)
    decoder = tok_cfg.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        for key, entry in decoder.items():
            if str(key).isdigit() and isinstance(entry, dict):
                added.setdefault(int(key), str(entry.get("content")))
    return added


def read_source_tokenizer(directory: Path, n_vocab: int) -> SourceTokenizer:
    """The checkpoint's tokenizer, checked to be one the export can extend: a SentencePiece model with
    exactly one piece per embedding row, no added tokens beyond it, no ``<image>``/``<pad>`` piece, and
    identity normalisation (LLaMA's; a normalising model would need its rules rebuilt)."""
    import sentencepiece as spm

    path = directory / "tokenizer.model"
    try:
        present = path.is_file()
    except (OSError, ValueError):
        present = False
    if not present:
        raise ConversionError(
            f"no tokenizer.model in {directory}", hint="download the checkpoint's tokenizer.model too"
        )
    data = read_regular(
        path, label=str(path), what="tokenizer.model", max_bytes=MAX_TOKENIZER_BYTES, error=ConversionError
    )
    sp = spm.SentencePieceProcessor()
    try:
        loaded = sp.LoadFromSerializedProto(data)
    except Exception as err:  # noqa: BLE001 - sentencepiece raises assorted errors on garbage
        raise ConversionError(
            f"cannot read tokenizer.model: {type(err).__name__}: {shown(str(err))}",
            hint="re-download tokenizer.model (it must be a SentencePiece model)",
        ) from None
    if not loaded:
        raise ConversionError(
            "cannot read tokenizer.model (not a SentencePiece model)", hint="re-download it"
        )
    pieces, scores, kinds = [], [], []
    for i in range(sp.get_piece_size()):
        pieces.append(sp.id_to_piece(i))
        score = float(sp.get_score(i))
        if not math.isfinite(score):
            raise ConversionError(f"tokenizer.model: token {i} has score {score}", hint="re-download it")
        scores.append(score)
        special = sp.is_unknown(i) or sp.is_control(i)
        kinds.append(_SP_SPECIAL if special else _SP_BYTE if sp.is_byte(i) else _SP_NORMAL)
    if len(pieces) != n_vocab:
        raise ConversionError(
            f"tokenizer.model has {len(pieces)} tokens but the embedding {n_vocab} rows",
            hint="the llava-hf export needs one token per embedding row (LLaVA-1.5: 32000)",
        )
    for taken in (IMAGE_TOKEN, PAD_TOKEN):
        if taken in pieces:
            raise ConversionError(
                f"tokenizer.model already has a {taken} token",
                hint="this checkpoint is not an original LLaVA-1.5",
            )
    tok_cfg = _json(directory / "tokenizer_config.json")
    beyond = sorted(i for i in _added_ids(directory, tok_cfg) if i >= n_vocab)
    if beyond:
        raise ConversionError(
            f"the tokenizer adds tokens beyond the {n_vocab} pieces (ids {shown(beyond)})",
            hint="only tokenizers without added tokens (original LLaVA-1.5) can be exported",
        )
    space = sp.encode("a", out_type=str)[:1] == ["\u2581a"]
    expected = ("\u2581" if space else "") + _NORMALIZE_PROBE.replace(" ", "\u2581")
    if sp.normalize(_NORMALIZE_PROBE) != expected:
        raise ConversionError(
            "tokenizer.model normalizes text (not identity normalization, as LLaMA's)",
            hint="only LLaMA-style SentencePiece tokenizers can be exported to llava-hf",
        )
    bos, eos, unk = int(sp.bos_id()), int(sp.eos_id()), int(sp.unk_id())
    if bos < 0 or eos < 0 or unk < 0:
        raise ConversionError("tokenizer.model defines no BOS, EOS or UNK token", hint="re-download it")
    return SourceTokenizer(
        data, tuple(pieces), tuple(scores), tuple(kinds), bos, eos, unk, space, tok_cfg,
        _json(directory / "generation_config.json"),
    )  # fmt: skip


def _added(idx: int, content: str) -> dict[str, Any]:
    return {
        "id": idx,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _merges(tok: SourceTokenizer) -> list[str]:
    """BPE merges of the SentencePiece pieces: every split of a normal piece into two pieces, ordered by
    the merged piece's score (highest first), its id, then the ids of the two halves."""
    vocab = {p: i for i, p in enumerate(tok.pieces)}
    found: list[tuple[float, int, int, int, str]] = []
    for idx, piece in enumerate(tok.pieces):
        if tok.kinds[idx] != _SP_NORMAL or " " in piece:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            li, ri = vocab.get(left), vocab.get(right)
            if li is None or ri is None or tok.kinds[li] != _SP_NORMAL or tok.kinds[ri] != _SP_NORMAL:
                continue
            found.append((-tok.scores[idx], idx, li, ri, f"{left} {right}"))
    found.sort()
    return [m for *_, m in found]


def _tokenizer_json(tok: SourceTokenizer) -> dict[str, Any]:
    specials = {tok.unk: "unk", tok.bos: "bos", tok.eos: "eos"}
    added = [_added(i, tok.pieces[i]) for i in sorted(specials)]
    added += [_added(tok.image_id, IMAGE_TOKEN), _added(tok.pad_id, PAD_TOKEN)]
    bos = tok.pieces[tok.bos]
    normalizers: list[dict[str, Any]] = (
        [{"type": "Prepend", "prepend": "\u2581"}] if tok.add_prefix_space else []
    )
    normalizers.append({"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"})
    decoders: list[dict[str, Any]] = [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
    ]
    if tok.add_prefix_space:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [tok.bos], "tokens": [bos]}},
        },
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": tok.pieces[tok.unk],
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": {p: i for i, p in enumerate(tok.pieces)},
            "merges": _merges(tok),
        },
    }


def _token_entry(content: str) -> dict[str, Any]:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def tokenizer_files(tok: SourceTokenizer, max_length: int) -> dict[str, Any]:
    """{file name: JSON value} of the tokenizer: tokenizer.json, tokenizer_config.json (chat template
    included), special_tokens_map.json, added_tokens.json."""
    names = {
        "bos_token": tok.pieces[tok.bos],
        "eos_token": tok.pieces[tok.eos],
        "unk_token": tok.pieces[tok.unk],
    }
    decoder = {
        str(i): {**_token_entry(tok.pieces[i]), "special": True} for i in sorted({tok.unk, tok.bos, tok.eos})
    }
    decoder[str(tok.image_id)] = {**_token_entry(IMAGE_TOKEN), "special": True}
    decoder[str(tok.pad_id)] = {**_token_entry(PAD_TOKEN), "special": True}
    config = {
        # loaded as tokenizer.json says (transformers 5 rebuilds a LlamaTokenizer's pre-tokenizer, which
        # drops SentencePiece's extra "▁" before a leading space)
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": tok.add_prefix_space,
        "legacy": True,  # if rebuilt anyway: a dummy prefix after every added token, as LLaVA tokenizes
        "added_tokens_decoder": decoder,
        **names,
        "pad_token": PAD_TOKEN,
        "image_token": IMAGE_TOKEN,
        "extra_special_tokens": {"image_token": IMAGE_TOKEN},
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        "padding_side": "left",
        "sp_model_kwargs": {},
        "processor_class": "LlavaProcessor",
        "chat_template": CHAT_TEMPLATE,
    }
    special_map = {k: _token_entry(v) for k, v in names.items()}
    special_map["pad_token"] = _token_entry(PAD_TOKEN)
    special_map["image_token"] = _token_entry(IMAGE_TOKEN)
    return {
        "tokenizer.json": _tokenizer_json(tok),
        "tokenizer_config.json": config,
        "special_tokens_map.json": special_map,
        "added_tokens.json": {IMAGE_TOKEN: tok.image_id, PAD_TOKEN: tok.pad_id},
    }

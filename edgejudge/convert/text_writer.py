"""The language-model GGUF (``general.architecture = "llama"``): tensors, vocabulary and metadata.

``text_jobs`` maps the checkpoint's LLaMA tensors to GGUF names (Q/K rows permuted from Hugging Face's
rotate-half RoPE to GGML's interleaved pairs; norms F32, matrices F16; ``rotary_emb.inv_freq`` skipped);
``read_vocab`` reads the SentencePiece ``tokenizer.model`` (scores, token types, unique strings; added tokens
such as llava-hf's ``<image>`` as user-defined; padding rows up to the embedding size); ``write_text_gguf``
streams it all with ``gguf.GGUFWriter`` through :mod:`edgejudge.convert.stream` (one tensor at a time).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import read_regular
from ..errors import ConversionError
from .hparams import ConvertPlan
from .limits import MAX_TOKENIZER_BYTES, read_json_file, shown
from .stream import TensorJob, check_tensor_shape, write_streaming

__all__ = [
    "TensorJob",
    "Vocab",
    "TOKEN_NORMAL",
    "TOKEN_UNKNOWN",
    "TOKEN_CONTROL",
    "TOKEN_USER_DEFINED",
    "TOKEN_UNUSED",
    "TOKEN_BYTE",
    "read_vocab",
    "text_jobs",
    "write_text_gguf",
    "write_streaming",
    "qk_rows",
]

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class Vocab:
    """The token list written to ``tokenizer.ggml.*``."""

    tokens: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]
    bos: int
    eos: int
    unk: int
    pad: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool


def qk_rows(n_heads: int, head_dim: int) -> tuple[int, ...]:
    """Row order turning HF rotate-half Q/K rows into GGML's interleaved pairs (row 2i+j ← j·hd/2+i)."""
    idx = np.arange(n_heads * head_dim).reshape(n_heads, 2, head_dim // 2).swapaxes(1, 2).reshape(-1)
    return tuple(int(i) for i in idx)


def _load_json(path: Path) -> dict[str, Any]:
    """A tokenizer-side JSON file as a dict ({} when absent or not an object); bounded, see limits."""
    if not _is_file(path):
        return {}
    data = read_json_file(path, path.name, hint="the file must be valid JSON")
    return data if isinstance(data, dict) else {}


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


_TOKEN_ID = re.compile(r"[0-9]{1,9}", re.ASCII)


def _added_tokens(directory: Path) -> dict[int, str]:
    added: dict[int, str] = {}
    for text, idx in _load_json(directory / "added_tokens.json").items():
        if isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx < 2**31:
            added[idx] = str(text)
    decoder = _load_json(directory / "tokenizer_config.json").get("added_tokens_decoder")
    if not isinstance(decoder, dict):
        decoder = {}
    for key, entry in decoder.items():
        if _TOKEN_ID.fullmatch(key) and isinstance(entry, dict) and isinstance(entry.get("content"), str):
            added.setdefault(int(key), entry["content"])
    return added


def _token_id(value: Any, tokens: Sequence[str]) -> int | None:
    text = value.get("content") if isinstance(value, dict) else value
    if isinstance(text, str) and text in tokens:
        return tokens.index(text)
    return None


def _read_sentencepiece(
    data: bytes,
) -> tuple[list[str], list[float], list[int], dict[str, int], bool]:
    """(pieces, scores, token types, {bos, eos, unk} ids, adds a space prefix) of a serialized
    SentencePiece model. A corrupt model raises whatever sentencepiece raises (the caller maps it)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    if not sp.LoadFromSerializedProto(data):
        raise ConversionError(
            "cannot read tokenizer.model (not a SentencePiece model)", hint="re-download it"
        )
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        score = float(sp.get_score(i))
        if not math.isfinite(score):
            raise ConversionError(f"tokenizer.model: token {i} has score {score}", hint="re-download it")
        scores.append(score)
        if sp.is_unknown(i):
            types.append(TOKEN_UNKNOWN)
        elif sp.is_control(i):
            types.append(TOKEN_CONTROL)
        elif sp.is_byte(i):
            types.append(TOKEN_BYTE)
        elif sp.is_unused(i):
            types.append(TOKEN_UNUSED)
        else:
            types.append(TOKEN_NORMAL)
    ids = {"bos": int(sp.bos_id()), "eos": int(sp.eos_id()), "unk": int(sp.unk_id())}
    return tokens, scores, types, ids, sp.encode("a", out_type=str)[:1] == ["\u2581a"]


def read_vocab(directory: Path, n_vocab: int, config: dict[str, Any]) -> Vocab:
    """The SentencePiece vocabulary of ``directory/tokenizer.model``, padded to ``n_vocab`` entries."""
    model = directory / "tokenizer.model"
    if not _is_file(model):
        raise ConversionError(
            f"no tokenizer.model in {directory}", hint="download the checkpoint's tokenizer.model too"
        )
    data = read_regular(
        model, label=str(model), what="tokenizer.model", max_bytes=MAX_TOKENIZER_BYTES, error=ConversionError
    )
    try:
        tokens, scores, types, sp_ids, space_prefix = _read_sentencepiece(data)
    except ConversionError:
        raise
    except Exception as err:  # noqa: BLE001 - sentencepiece raises assorted errors on garbage
        raise ConversionError(
            f"cannot read tokenizer.model: {type(err).__name__}: {shown(str(err))}",
            hint="re-download tokenizer.model (it must be a SentencePiece model)",
        ) from None
    n_sp = len(tokens)
    if n_sp > n_vocab:
        raise ConversionError(
            f"tokenizer.model has {n_sp} tokens but the embedding only {n_vocab} rows",
            hint="the tokenizer belongs to a different model",
        )
    added = _added_tokens(directory)
    seen = set(tokens)
    for i in range(n_sp, n_vocab):
        text = added.get(i)
        kind = TOKEN_USER_DEFINED
        if text is None or text in seen:
            text, kind = f"[PAD{i}]", TOKEN_UNUSED
        tokens.append(text)
        scores.append(-1000.0)
        types.append(kind)
        seen.add(text)
    if any(i >= n_vocab for i in added if i >= n_sp):
        raise ConversionError(
            f"an added token id is beyond the {n_vocab} embedding rows",
            hint="the tokenizer files do not match",
        )
    if len(seen) != len(tokens):
        raise ConversionError(
            "tokenizer.model has duplicate token strings", hint="re-download tokenizer.model"
        )

    nested = config.get("text_config")
    text_cfg: dict[str, Any] = nested if isinstance(nested, dict) else {}
    gen = _load_json(directory / "generation_config.json")
    tok_cfg = _load_json(directory / "tokenizer_config.json")
    special_map = _load_json(directory / "special_tokens_map.json")

    def pick(key: str, fallback: int | None) -> int | None:
        for source in (config, text_cfg, gen):
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n_vocab:
                return value
        return fallback

    pad = pick("pad_token_id", None)
    if pad is None:
        pad = _token_id(special_map.get("pad_token"), tokens)
    bos, eos = pick("bos_token_id", sp_ids["bos"]), pick("eos_token_id", sp_ids["eos"])
    if bos is None or bos < 0 or eos is None or eos < 0:
        raise ConversionError(
            "the tokenizer defines no BOS/EOS token", hint="check tokenizer.model/config.json"
        )
    return Vocab(
        tokens=tuple(tokens),
        scores=tuple(scores),
        types=tuple(types),
        bos=bos,
        eos=eos,
        unk=max(sp_ids["unk"], 0),
        pad=pad,
        add_bos=bool(tok_cfg.get("add_bos_token", True)),
        add_eos=bool(tok_cfg.get("add_eos_token", False)),
        add_space_prefix=space_prefix,
    )


def _job(
    ckpt: Any, src: str, out: str, want: tuple[int, ...], rows: tuple[int, ...] | None = None
) -> TensorJob:
    info = ckpt.info(src)
    check_tensor_shape(src, tuple(info.shape), want)
    dtype = np.dtype(np.float32) if len(info.shape) <= 1 else np.dtype(np.float16)
    return TensorJob(out, src, ckpt, tuple(info.shape), dtype, rows)


def text_jobs(plan: ConvertPlan, ckpt: Any) -> list[TensorJob]:
    """The text model's tensors in GGUF order (validated to exist and to have the shapes the config
    implies)."""
    p, t = plan.names.text_prefix, plan.text
    d, kv, ffn = t.hidden_size, t.n_kv_heads * t.head_dim, t.ffn_size
    jobs = [_job(ckpt, p + "embed_tokens.weight", "token_embd.weight", (t.vocab_size, d))]
    q_rows = qk_rows(t.n_heads, t.head_dim)
    k_rows = qk_rows(t.n_kv_heads, t.head_dim)
    for i in range(t.n_layers):
        lp = f"{p}layers.{i}."
        jobs += [
            _job(ckpt, lp + "input_layernorm.weight", f"blk.{i}.attn_norm.weight", (d,)),
            _job(ckpt, lp + "self_attn.q_proj.weight", f"blk.{i}.attn_q.weight", (d, d), q_rows),
            _job(ckpt, lp + "self_attn.k_proj.weight", f"blk.{i}.attn_k.weight", (kv, d), k_rows),
            _job(ckpt, lp + "self_attn.v_proj.weight", f"blk.{i}.attn_v.weight", (kv, d)),
            _job(ckpt, lp + "self_attn.o_proj.weight", f"blk.{i}.attn_output.weight", (d, d)),
            _job(ckpt, lp + "post_attention_layernorm.weight", f"blk.{i}.ffn_norm.weight", (d,)),
            _job(ckpt, lp + "mlp.gate_proj.weight", f"blk.{i}.ffn_gate.weight", (ffn, d)),
            _job(ckpt, lp + "mlp.up_proj.weight", f"blk.{i}.ffn_up.weight", (ffn, d)),
            _job(ckpt, lp + "mlp.down_proj.weight", f"blk.{i}.ffn_down.weight", (d, ffn)),
        ]
    jobs.append(_job(ckpt, p + "norm.weight", "output_norm.weight", (d,)))
    if plan.names.lm_head is not None:
        jobs.append(_job(ckpt, plan.names.lm_head, "output.weight", (t.vocab_size, d)))
    return jobs


def write_text_gguf(
    path: Path,
    plan: ConvertPlan,
    ckpt: Any,
    jobs: Sequence[TensorJob],
    *,
    name: str,
    on_tensor: Callable[[TensorJob], None] | None = None,
) -> None:
    """Write the F16 llama GGUF of ``plan`` to ``path`` (streaming)."""
    import gguf

    t = plan.text
    vocab = read_vocab(Path(ckpt.directory), t.vocab_size, ckpt.config)
    w = gguf.GGUFWriter(path, "llama")
    try:
        w.add_type("model")
        w.add_name(name)
        w.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
        w.add_vocab_size(t.vocab_size)
        w.add_context_length(t.context_length)
        w.add_embedding_length(t.hidden_size)
        w.add_block_count(t.n_layers)
        w.add_feed_forward_length(t.ffn_size)
        w.add_head_count(t.n_heads)
        w.add_head_count_kv(t.n_kv_heads)
        w.add_rope_dimension_count(t.head_dim)
        w.add_rope_freq_base(float(t.rope_theta))
        w.add_layer_norm_rms_eps(float(t.rms_eps))
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(list(vocab.tokens))
        w.add_token_scores(list(vocab.scores))
        w.add_token_types(list(vocab.types))
        w.add_bos_token_id(vocab.bos)
        w.add_eos_token_id(vocab.eos)
        w.add_unk_token_id(vocab.unk)
        if vocab.pad is not None:
            w.add_pad_token_id(vocab.pad)
        w.add_add_bos_token(vocab.add_bos)
        w.add_add_eos_token(vocab.add_eos)
        w.add_add_space_prefix(vocab.add_space_prefix)
        w.add_string("edgejudge.source.architecture", plan.architecture)
        w.add_string("edgejudge.source.layout", plan.layout)
        write_streaming(w, jobs, on_tensor)
    finally:
        w.close()

"""Every quantization level: converted through llama.cpp's quantizer, loads in Llama + mtmd and generates.

One tiny checkpoint, converted once per (text, mmproj) quant pair; tensor types and metadata are read back
with gguf's reader; the text model generates a few tokens after an image was encoded and decoded.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgejudge.convert import ConvertResult
from edgejudge.fixtures.tiny import TinySpec, make_tiny_llava
from edgejudge.install import convert_checkpoint  # the converter for the installed runtime (probes CLS)
from edgejudge.probe import encode_image, rel_err

SPEC = TinySpec()
PAIRS = [("Q8_0", "Q8_0"), ("Q5_K_M", "F16"), ("Q4_K_M", "F16")]
# the ggml types each text quant must produce (K-quants really apply: the tiny widths are multiples of 256)
EXPECTED = {"Q8_0": {"Q8_0", "F32"}, "Q5_K_M": {"Q5_K", "Q6_K", "F32"}, "Q4_K_M": {"Q4_K", "Q6_K", "F32"}}
FILE_TYPES = {"Q8_0": 7, "Q5_K_M": 17, "Q4_K_M": 15}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llava(tmp_path_factory.mktemp("quant") / "ckpt", SPEC, fmt="bin")


@pytest.fixture(scope="module")
def results(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ConvertResult]:
    out = tmp_path_factory.mktemp("quant-out")
    f16 = convert_checkpoint(ckpt, out, name="tiny", quant="f16", mmproj_quant="f16")
    found = {"F16": f16}
    for quant, mm in PAIRS:
        found[quant] = convert_checkpoint(
            ckpt, out, name="tiny", quant=quant.lower(), mmproj_quant=mm.lower()
        )
    return found


def test_file_names_and_no_leftovers(results: dict[str, ConvertResult]) -> None:
    out = results["F16"].text_model.parent
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["tiny-F16.gguf", "tiny-Q8_0.gguf", "tiny-Q5_K_M.gguf", "tiny-Q4_K_M.gguf", "mmproj-tiny-F16.gguf",
         "mmproj-tiny-Q8_0.gguf"]
    )  # fmt: skip


@pytest.mark.parametrize(("quant", "mm"), PAIRS)
def test_quantized_types(results: dict[str, ConvertResult], quant: str, mm: str) -> None:
    result = results[quant]
    assert (result.quant, result.mmproj_quant) == (quant, mm)
    text = gguf.GGUFReader(result.text_model)
    types = {t.tensor_type.name for t in text.tensors}
    assert types == EXPECTED[quant]
    assert text.fields["general.file_type"].contents() == FILE_TYPES[quant]
    assert all(t.tensor_type.name == "F32" for t in text.tensors if t.name.endswith("norm.weight"))
    mmproj = gguf.GGUFReader(result.mmproj)
    by_name = {t.name: t.tensor_type.name for t in mmproj.tensors}
    assert by_name["v.class_embd"] == "F32" and by_name["v.position_embd.weight"] in ("F16", "F32")
    assert by_name["mm.2.weight"] == ("Q8_0" if mm == "Q8_0" else "F16")
    assert mmproj.fields["edgejudge.clip.cls_position"].contents() == result.cls_position
    assert mmproj.fields["clip.vision.feature_layer"].contents() == [
        SPEC.vision_layers + SPEC.select_layer + 1
    ]


@pytest.mark.parametrize("quant", ["F16", "Q8_0", "Q5_K_M", "Q4_K_M"])
def test_loads_encodes_and_generates(results: dict[str, ConvertResult], quant: str) -> None:
    from llama_cpp import llama_cpp as lc
    from llama_cpp import mtmd_cpp as mtmd

    from edgejudge.native.log import quiet_native_logs
    from edgejudge.native.model import SafeLlama, TextModel

    result = results[quant]
    image = np.random.default_rng(3).integers(
        0, 256, size=(SPEC.image_size, SPEC.image_size, 3), dtype=np.uint8
    )
    with quiet_native_logs():
        llm = SafeLlama(str(result.text_model), n_ctx=128, n_batch=64, verbose=False, n_threads=2)
    try:
        with TextModel(result.text_model, n_ctx=128, n_batch=64, n_threads=2) as model:
            embd = encode_image(model, result.mmproj, image)
        assert embd.shape == (SPEC.n_patches, SPEC.text_hidden) and np.isfinite(embd).all()
        if quant != "F16":
            base = results["F16"]
            with quiet_native_logs():
                ref_llm = TextModel(base.text_model, n_ctx=64, n_threads=2)
            try:
                ref = encode_image(ref_llm, base.mmproj, image)
            finally:
                ref_llm.close()
            assert rel_err(embd, ref) < (0.05 if result.mmproj_quant == "Q8_0" else 1e-6)
        # decode the image embeddings after BOS, then generate a few tokens from there
        llm.eval([1])
        n_past = ctypes.c_int32(0)
        params = mtmd.mtmd_context_params_default()
        params.use_gpu, params.warmup, params.n_threads = False, False, 2
        ctx = mtmd.mtmd_init_from_file(str(result.mmproj).encode(), llm.model, params)
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            pixels = image.tobytes()
            bitmap = mtmd.mtmd_bitmap_init(
                SPEC.image_size, SPEC.image_size, (ctypes.c_uint8 * len(pixels)).from_buffer_copy(pixels)
            )
            marker = mtmd.mtmd_default_marker()
            text = mtmd.mtmd_input_text(
                text=marker, text_len=len(marker), add_special=False, parse_special=True
            )
            assert (
                mtmd.mtmd_tokenize(
                    ctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1
                )
                == 0
            )
            mtmd.mtmd_bitmap_free(bitmap)
            chunk = mtmd.mtmd_input_chunks_get(chunks, 0)
            rc = mtmd.mtmd_helper_eval_chunk_single(
                ctx, llm._ctx.ctx, chunk, llm.n_tokens, 0, llm.n_batch, False, ctypes.byref(n_past)
            )
            assert rc == 0 and n_past.value == 1 + SPEC.n_patches
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_free(ctx)
        llm.n_tokens = n_past.value
        llm.input_ids[1 : n_past.value] = -1
        prompt = llm.tokenize(b" Feedback:", add_bos=False)
        llm.eval(prompt)
        generated = []
        for _ in range(6):
            token = llm.sample(temp=0.0)
            generated.append(token)
            llm.eval([token])
        assert len(generated) == 6 and all(
            0 <= t < lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(llm.model)) for t in generated
        )
    finally:
        llm.close()


def test_script_json_output(ckpt: Path, tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "convert.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(ckpt), "--outdir", str(tmp_path / "o"), "--name", "cli",
         "--quant", "q8_0", "--mmproj-quant", "F16", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert Path(data["text_model"]).is_absolute() and Path(data["text_model"]).is_file()
    assert Path(data["text_model"]).name == "cli-Q8_0.gguf"
    assert Path(data["mmproj"]).name == "mmproj-cli-F16.gguf" and Path(data["mmproj"]).is_file()
    assert data["cls_position"] in ("first", "last")


def test_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "convert.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "missing"), "--outdir", str(tmp_path / "o"), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and "hint: " in proc.stderr and "Traceback" not in proc.stderr

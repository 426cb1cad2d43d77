"""The only home of the llama.cpp bindings (``llama_cpp``): every native call goes through here.

- ``model``: ``TextModel``, the text model, its context (unified KV cache for parallel sequences) and its
  decode batch; owns llama-cpp-python's ``Llama`` and the only code that touches its state;
- ``mtmd``: ``MtmdContext`` and ``Chunks`` over libmtmd (tokenizing text | image | text, the vision
  encoder, decoding image embeddings), and which libmtmd is loaded;
- ``sampling``: the vocabulary (token pieces) and the sampler chain with an optional GBNF grammar;
- ``log``: native log routing (silent unless verbose) and ``VERBOSE_HINT``;
- ``quantize``, ``f16``, ``system``: llama.cpp's quantizer, its f16 cast, what the build says of itself.

Values cross in and out as plain Python and numpy values or records defined here; nothing in this package
imports the engine, the converter or anything above them. Submodules import ``llama_cpp`` when imported,
so callers import them lazily where start-up time matters.
"""

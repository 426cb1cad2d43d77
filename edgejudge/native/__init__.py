"""The only home of the llama.cpp bindings (``llama_cpp``): every native call goes through here."""

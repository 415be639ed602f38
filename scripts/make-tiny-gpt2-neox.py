"""Writes two tiny random-weight models, a GPT-2 and a GPT-NeoX, as Hugging Face model directories,
and the golden activations loupe's GPT-2 and GPT-NeoX forward passes are checked against.

What it writes (all seeded, so rerunning gives the same bytes; about 2 MB in all):

    tests/fixtures/tiny-gpt2/{config.json,model.safetensors,tokenizer.json}
    tests/fixtures/tiny-neox/{config.json,model.safetensors,tokenizer.json}
    tests/fixtures/tiny-gpt2-golden.{json,safetensors}
    tests/fixtures/tiny-neox-golden.{json,safetensors}

Tokenizer. One tokenizer.json for both models: a byte-level BPE (vocabulary 512) trained with the
`tokenizers` library on the paragraphs in TRAINING_TEXT below: ByteLevel pre-tokenizer (GPT-2's
regex, no prefix space), ByteLevel decoder and post-processor, one special token "<|endoftext|>"
(id 0, also the models' bos/eos id). Encoding adds no special tokens.

Models. torch.manual_seed(0), then
    GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                               activation_function="gelu_new"))
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=256, rotary_pct=0.25,
                                     use_parallel_residual=True, max_position_embeddings=64,
                                     hidden_act="gelu", tie_word_embeddings=False))
and, so that every parameter matters and attention patterns are far from uniform, every weight
matrix and embedding is redrawn from N(0, 0.2^2), every bias from N(0, 0.1^2), and every LayerNorm
weight from 1 + N(0, 0.1^2) (transformers initialises biases to 0, LayerNorm weights to 1 and
matrices with std 0.02). GPT-2's lm_head is tied to wte (so model.safetensors has no lm_head); the
NeoX has its own embed_out. Saved with save_pretrained(dir, safe_serialization=True); the
generation_config.json that save_pretrained also writes is removed. transformers 5 writes NeoX's
rotary settings as rope_parameters = {rope_theta, partial_rotary_factor, rope_type}; the script
also writes the classic keys rotary_pct and rotary_emb_base into config.json (as Pythia's
config.json has them) and checks that transformers reloads the directory to the same logits.

Golden activations. Three prompts, encoded with the tokenizer above (text and ids in the JSON).
For each prompt i: `prompt{i}.logits` [pos, vocab] at every position, and every hook point of
scripts/golden_hooks.py at every layer (`prompt{i}.<hook name>`; the JSON lists them). GPT-2 also
has `hook_pos_embed`; NeoX (parallel residual) has no `hook_resid_mid`. Attention scores are not
exposed by transformers: they are computed from the recorded q and k (after rotary for NeoX, using
transformers' own apply_rotary_pos_emb with the cos/sin the attention module received) times the
module's scaling (1/sqrt(d_head)), with -inf where k_pos > q_pos. Greedy continuations: 10 tokens by
full recompute. The script checks that the recorded hook points reproduce the forward pass
(residual sums, pattern = softmax(scores), z = pattern @ v, final norm and unembedding of the last
block's output = logits).

Run once, from the repository root, in a throwaway environment (CPU is enough):

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch transformers tokenizers safetensors gguf
    /tmp/refenv/bin/python scripts/make-tiny-gpt2-neox.py
"""

import json
import sys
from pathlib import Path

import safetensors.torch
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_hooks import OUT, Arch, Recorder, greedy, hook_names, versions  # noqa: E402

VOCAB = 512
GREEDY_TOKENS = 10
EOT = "<|endoftext|>"

TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs "
    "into the forest where the trees are tall and the river is cold.",
    "Once upon a time there was a little village by the sea. Every morning the fishermen went out "
    "in their boats, and every evening they came back with fish, stories and songs.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, i * 2))\n",
    "Interpretability research asks what a neural network computes: which features it represents, "
    "how attention heads move information between positions, and how the residual stream carries "
    "it from layer to layer.",
    "Le petit chat est assis sur le tapis. Il regarde la fenetre, puis il dort. "
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 2024 3.14159.",
    "She said: \"It's late, we'll go home now.\" They're tired; I'd rather stay, but you've "
    "already packed the bags!",
]

PROMPTS = [
    "The quick brown fox",
    "def add(a, b):\n    return",
    "Once upon a time, the little cat said: \"It's late!\"",
]


def make_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT * 4, trainer=trainer)
    assert tok.token_to_id(EOT) == 0
    return tok


def perturb(model):
    """Redraw weights so that every parameter, biases and LayerNorm included, is non-trivial."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif p.dim() == 1:  # LayerNorm weight
                p.normal_(1.0, 0.1)
            else:  # weight matrices and embeddings (tied lm_head is the same tensor as wte)
                p.normal_(0.0, 0.2)


def gpt2_arch(model):
    c = model.config
    return Arch(
        blocks=lambda m: m.transformer.h,
        embed=lambda m: m.transformer.wte,
        pos_embed=lambda m: m.transformer.wpe,
        ln1="ln_1", attn="attn", ln2="ln_2",
        attn_out="attn.c_proj", z="attn.c_proj",
        mlp_post="mlp.c_proj", mlp_out="mlp",
        qkv="gpt2",
        n_heads=c.n_head, n_kv_heads=c.n_head, d_head=c.n_embd // c.n_head,
        final=lambda m, x: m.lm_head(m.transformer.ln_f(x)),
    )


def neox_arch(model):
    from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

    c = model.config
    return Arch(
        blocks=lambda m: m.gpt_neox.layers,
        embed=lambda m: m.gpt_neox.embed_in,
        ln1="input_layernorm", attn="attention", ln2="post_attention_layernorm",
        attn_out="attention.dense", z="attention.dense",
        mlp_post="mlp.dense_4h_to_h", mlp_out="mlp",
        qkv="neox",
        n_heads=c.num_attention_heads, n_kv_heads=c.num_attention_heads,
        d_head=c.hidden_size // c.num_attention_heads,
        parallel_residual=True,
        rotary=apply_rotary_pos_emb,
        final=lambda m, x: m.get_output_embeddings()(m.gpt_neox.final_layer_norm(x)),
    )


def save_model(model, tok, name, extra_config=None):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(d), safe_serialization=True)
    gen = d / "generation_config.json"
    if gen.exists():
        gen.unlink()
    if extra_config:
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(extra_config)
        (d / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tok.save(str(d / "tokenizer.json"))
    return d


def golden(model, arch, tok, name, reload_cls):
    model.eval()
    layers = list(range(len(arch.blocks(model))))
    rec = Recorder(model, arch, layers)
    tensors = {}
    prompts = []
    for i, text in enumerate(PROMPTS):
        ids = tok.encode(text).ids
        out, acts = rec.run(ids)
        tensors[f"prompt{i}.logits"] = out.logits[0].detach().contiguous()
        for k, v in acts.items():
            tensors[f"prompt{i}.{k}"] = v.contiguous()
        prompts.append({"text": text, "ids": ids, "greedy": greedy(model, ids, GREEDY_TOKENS)})
    for h in rec.handles:
        h.remove()
    names = hook_names(layers, arch.parallel_residual, arch.pos_embed is not None)
    for i in range(len(PROMPTS)):
        got = sorted(k.split(".", 1)[1] for k in tensors if k.startswith(f"prompt{i}."))
        assert got == sorted(names + ["logits"]), set(got) ^ set(names + ["logits"])
    assert all(t.dtype == torch.float32 for t in tensors.values())

    # The saved directory must reload to the same model.
    d = OUT / name
    again = reload_cls.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        for i, p in enumerate(prompts):
            logits = again(torch.tensor([p["ids"]])).logits[0]
            assert torch.equal(logits, tensors[f"prompt{i}.logits"]), f"{name}: reload differs"

    shapes = {k.split(".", 1)[1]: list(tensors[k].shape) for k in tensors if k.startswith("prompt0.")}
    meta = {
        "about": f"Reference for loupe's {name}: see scripts/make-tiny-gpt2-neox.py for how it was made.",
        "model_dir": f"tests/fixtures/{name}",
        "versions": versions(),
        "config": json.loads(model.config.to_json_string()),
        "layers": layers,
        "hooks": names,
        "logits": "prompt{i}.logits holds every position",
        "attn_scores": "computed from hook_q/hook_k (after rotary where the model has it) times the "
        "attention module's scaling; entries with k_pos > q_pos are -inf",
        "prompt0_shapes": shapes,
        "prompts": prompts,
    }
    safetensors.torch.save_file(tensors, str(OUT / f"{name}-golden.safetensors"))
    (OUT / f"{name}-golden.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {d}/ and {OUT}/{name}-golden.{{json,safetensors}}")


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    tok = make_tokenizer()
    vocab = tok.get_vocab_size()
    assert vocab == VOCAB, vocab
    for text in PROMPTS:
        assert tok.decode(tok.encode(text).ids) == text

    gpt2 = GPT2LMHeadModel(GPT2Config(
        vocab_size=vocab, n_positions=64, n_embd=64, n_layer=2, n_head=4,
        activation_function="gelu_new", bos_token_id=0, eos_token_id=0,
        attn_implementation="eager",
    ))
    perturb(gpt2)
    save_model(gpt2, tok, "tiny-gpt2")
    golden(gpt2, gpt2_arch(gpt2), tok, "tiny-gpt2", GPT2LMHeadModel)

    neox = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, rotary_pct=0.25, use_parallel_residual=True,
        max_position_embeddings=64, hidden_act="gelu", tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=0, attn_implementation="eager",
    ))
    perturb(neox)
    rope = neox.config.rope_parameters
    assert rope["partial_rotary_factor"] == 0.25, rope
    save_model(neox, tok, "tiny-neox",
               {"rotary_pct": rope["partial_rotary_factor"], "rotary_emb_base": rope["rope_theta"]})
    golden(neox, neox_arch(neox), tok, "tiny-neox", GPTNeoXForCausalLM)


if __name__ == "__main__":
    main()

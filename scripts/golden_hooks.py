"""Shared by scripts/make-golden-gemma3.py, make-golden-qwen2.py and make-tiny-gpt2-neox.py: records
TransformerLens-style hook points from a Hugging Face transformers model with PyTorch hooks, and
checks that what was recorded reproduces the model's own forward pass.

Not a script: the three scripts above import it (they add scripts/ to sys.path).

Recorder.check asserts, for every prompt: hook_embed (+ hook_pos_embed) = hidden_states[0];
resid_pre = hidden_states[L]; resid_post = hidden_states[L + 1] below the last block;
resid_post = resid_mid + mlp_out (parallel residual: resid_pre + attn_out + mlp_out), all to 1e-5
of the largest magnitude; pattern = softmax(scores) to 1e-4 absolute (scores are computed here in
f64, transformers' in f32; Qwen2's layer-0 scores reach ~8000, so they differ by ~3e-5); rows of
pattern sum to 1; z = pattern @ v to 1e-4 relative; and final norm + unembedding of the last
block's resid_post = logits to 1e-4 relative.

Hook points, for one prompt (the batch dimension is dropped), at the layers asked for:

    hook_embed                   [pos, d_model]   token embedding as the first block sees it
                                                  (Gemma: after the sqrt(d_model) scale; GPT-2:
                                                  without positions)
    hook_pos_embed               [pos, d_model]   GPT-2 only: the learned position embedding rows
    blocks.L.hook_resid_pre      [pos, d_model]   input of block L
    blocks.L.ln1.hook_normalized [pos, d_model]   output of the first norm module, weight (and bias)
                                                  included
    blocks.L.attn.hook_q         [pos, n_heads, d_head]     query projection output with bias, in
                                                  heads, before rotary (Gemma: after q_norm)
    blocks.L.attn.hook_k         [pos, n_kv_heads, d_head]  same for keys (Gemma: after k_norm)
    blocks.L.attn.hook_v         [pos, n_kv_heads, d_head]  value projection output with bias
    blocks.L.attn.hook_attn_scores [n_heads, q_pos, k_pos] scaled scores before softmax, computed
                                                  here (see attn_scores below); masked entries -inf
    blocks.L.attn.hook_pattern   [n_heads, q_pos, k_pos]   softmax probabilities, as transformers'
                                                  eager attention returns them (output_attentions)
    blocks.L.attn.hook_z         [pos, n_heads, d_head]    input of the attention output projection
    blocks.L.hook_attn_out       [pos, d_model]   what attention adds to the residual stream
                                                  (Gemma: after post_attention_layernorm)
    blocks.L.hook_resid_mid      [pos, d_model]   residual after attention (not for parallel
                                                  residual blocks)
    blocks.L.ln2.hook_normalized [pos, d_model]   output of the norm in front of the MLP
    blocks.L.mlp.hook_post       [pos, d_mlp]     input of the MLP's output projection
    blocks.L.hook_mlp_out        [pos, d_model]   what the MLP adds to the residual stream
                                                  (Gemma: after post_feedforward_layernorm)
    blocks.L.hook_resid_post     [pos, d_model]   output of block L (a forward hook on the block,
                                                  since transformers' last hidden_states entry is
                                                  the final norm's output)
"""

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

MODELS_DIR = Path(os.environ.get("LOUPE_HOME", Path.home() / ".cache/loupe")) / "models"
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

# Tricky text for the tokenizer golden cases of the real models (digits, spaces, emoji, CJK, code):
# make-golden-smollm2.py's list and four more.
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
    "日本語のテキストと한국어",
    "🙂🙂🙂",
    "    indented code\n\tx = 1",
    "1234567890 12 345",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Arch:
    """Where each hook point lives in one transformers architecture."""

    blocks: Callable  # model -> list of blocks
    embed: Callable  # model -> token embedding module (its output is hook_embed)
    ln1: str  # block-relative module names
    attn: str
    ln2: str
    attn_out: str  # module whose output is hook_attn_out
    z: str  # module whose input is hook_z
    mlp_post: str  # module whose input is hook_post
    mlp_out: str  # module whose output is hook_mlp_out
    # How q, k, v are read: "proj" (q_proj/k_proj/v_proj outputs), "gemma" (q_norm/k_norm
    # outputs, v_proj output), "gpt2" (split of c_attn's output), "neox" (query_key_value's
    # output viewed [pos, heads, 3 * d_head] then chunked).
    qkv: str
    n_heads: int
    n_kv_heads: int
    d_head: int
    parallel_residual: bool = False
    pos_embed: Callable | None = None  # GPT-2: model -> position embedding module
    rotary: Callable | None = None  # apply_rotary_pos_emb(q, k, cos, sin) of the model's module
    sliding_window: Callable = field(default=lambda layer: None)  # layer -> window or None
    final: Callable | None = None  # (model, resid_post of the last block) -> logits


def _sub(module, dotted):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


class Recorder:
    """Registers hooks on `model`; while `active`, each forward records hook points for `layers`."""

    def __init__(self, model, arch: Arch, layers):
        self.model = model
        self.arch = arch
        self.layers = list(layers)
        self.active = False
        self.acts = {}
        self.raw = {}  # per layer: rotary cos/sin and the head-shaped q/k as the attention saw them
        self.handles = []
        self._register()

    def _put(self, name, value):
        if self.active:
            self.acts[name] = value.detach().clone()

    def _register(self):
        a = self.arch
        h = self.handles
        h.append(a.embed(self.model).register_forward_hook(
            lambda m, i, o: self._put("hook_embed", _first(o)[0])))
        if a.pos_embed is not None:
            h.append(a.pos_embed(self.model).register_forward_hook(
                lambda m, i, o: self._put("hook_pos_embed", _first(o)[0])))
        blocks = a.blocks(self.model)
        for layer in self.layers:
            self._register_block(layer, blocks[layer])

    def _register_block(self, layer, block):
        a = self.arch
        h = self.handles
        p = f"blocks.{layer}."
        nh, nkv, dh = a.n_heads, a.n_kv_heads, a.d_head

        def pre(mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            self._put(p + "hook_resid_pre", x[0])

        h.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        h.append(block.register_forward_hook(
            lambda m, i, o: self._put(p + "hook_resid_post", _first(o)[0])))
        h.append(_sub(block, a.ln1).register_forward_hook(
            lambda m, i, o: self._put(p + "ln1.hook_normalized", _first(o)[0])))
        h.append(_sub(block, a.ln2).register_forward_hook(
            lambda m, i, o: self._put(p + "ln2.hook_normalized", _first(o)[0])))
        h.append(_sub(block, a.attn_out).register_forward_hook(
            lambda m, i, o: self._put(p + "hook_attn_out", _first(o)[0])))
        h.append(_sub(block, a.mlp_out).register_forward_hook(
            lambda m, i, o: self._put(p + "hook_mlp_out", _first(o)[0])))
        h.append(_sub(block, a.z).register_forward_pre_hook(
            lambda m, i: self._put(p + "attn.hook_z", i[0][0].reshape(i[0].shape[1], nh, dh))))
        h.append(_sub(block, a.mlp_post).register_forward_pre_hook(
            lambda m, i: self._put(p + "mlp.hook_post", i[0][0])))

        attn = _sub(block, a.attn)

        def attn_pre(mod, args, kwargs):
            if self.active:
                pe = kwargs.get("position_embeddings")
                self.raw.setdefault(layer, {})["pos_emb"] = pe
                self.raw[layer]["scaling"] = mod.scaling

        h.append(attn.register_forward_pre_hook(attn_pre, with_kwargs=True))

        def heads(x, n):  # [1, pos, n * dh] -> [pos, n, dh]
            return x[0].reshape(x.shape[1], n, dh)

        if a.qkv == "proj":
            h.append(attn.q_proj.register_forward_hook(
                lambda m, i, o: self._put(p + "attn.hook_q", heads(o, nh))))
            h.append(attn.k_proj.register_forward_hook(
                lambda m, i, o: self._put(p + "attn.hook_k", heads(o, nkv))))
            h.append(attn.v_proj.register_forward_hook(
                lambda m, i, o: self._put(p + "attn.hook_v", heads(o, nkv))))
        elif a.qkv == "gemma":
            # q_norm / k_norm run on [1, heads, pos, d_head].
            h.append(attn.q_norm.register_forward_hook(
                lambda m, i, o: self._put(p + "attn.hook_q", o[0].transpose(0, 1))))
            h.append(attn.k_norm.register_forward_hook(
                lambda m, i, o: self._put(p + "attn.hook_k", o[0].transpose(0, 1))))
            h.append(attn.v_proj.register_forward_hook(
                lambda m, i, o: self._put(p + "attn.hook_v", heads(o, nkv))))
        elif a.qkv == "gpt2":
            def c_attn(m, i, o):
                d = nh * dh
                self._put(p + "attn.hook_q", heads(o[..., :d], nh))
                self._put(p + "attn.hook_k", heads(o[..., d:2 * d], nh))
                self._put(p + "attn.hook_v", heads(o[..., 2 * d:], nh))

            h.append(attn.c_attn.register_forward_hook(c_attn))
        elif a.qkv == "neox":
            def qkv(m, i, o):
                x = o[0].reshape(o.shape[1], nh, 3 * dh)
                q, k, v = x.chunk(3, dim=-1)
                self._put(p + "attn.hook_q", q)
                self._put(p + "attn.hook_k", k)
                self._put(p + "attn.hook_v", v)

            h.append(attn.query_key_value.register_forward_hook(qkv))
        else:
            raise ValueError(a.qkv)

    def attn_scores(self, layer):
        """Scaled scores before softmax, [n_heads, q_pos, k_pos]: q and k as recorded (before
        rotary), rotated with the model's own apply_rotary_pos_emb and the cos/sin the attention
        module was called with, keys repeated for grouped-query heads (query head h reads key head
        h // (n_heads / n_kv_heads)), q @ k^T times the module's `scaling`. Entries the causal mask
        hides (k_pos > q_pos), or a sliding window hides (q_pos - k_pos >= window), are -inf."""
        a = self.arch
        p = f"blocks.{layer}."
        q = self.acts[p + "attn.hook_q"].transpose(0, 1).unsqueeze(0)  # [1, nh, pos, dh]
        k = self.acts[p + "attn.hook_k"].transpose(0, 1).unsqueeze(0)  # [1, nkv, pos, dh]
        raw = self.raw[layer]
        if a.rotary is not None:
            cos, sin = raw["pos_emb"]
            q, k = a.rotary(q, k, cos, sin)
        k = k.repeat_interleave(a.n_heads // a.n_kv_heads, dim=1)
        scores = (q[0].double() @ k[0].double().transpose(-1, -2) * raw["scaling"]).float()
        n = scores.shape[-1]
        i = torch.arange(n).unsqueeze(1)
        j = torch.arange(n).unsqueeze(0)
        hidden = j > i
        window = a.sliding_window(layer)
        if window is not None:
            hidden = hidden | (i - j >= window)
        return scores.masked_fill(hidden, float("-inf"))

    def run(self, ids):
        """One forward with output_attentions; returns (outputs, dict of hook point -> tensor)."""
        self.acts = {}
        self.raw = {}
        self.active = True
        try:
            with torch.no_grad():
                out = self.model(torch.tensor([ids]), output_hidden_states=True, output_attentions=True)
        finally:
            self.active = False
        acts = self.acts
        for layer in self.layers:
            p = f"blocks.{layer}."
            acts[p + "attn.hook_attn_scores"] = self.attn_scores(layer)
            acts[p + "attn.hook_pattern"] = out.attentions[layer][0].detach().clone()
            if not self.arch.parallel_residual:
                acts[p + "hook_resid_mid"] = acts[p + "hook_resid_pre"] + acts[p + "hook_attn_out"]
        self.check(ids, out, acts)
        return out, acts

    def check(self, ids, out, acts):
        """The recorded hook points must reproduce the forward pass."""
        a = self.arch
        hs = out.hidden_states

        def close(name, got, want, rel=1e-5):
            err = (got.double() - want.double()).abs().max().item()
            scale = max(want.double().abs().max().item(), 1e-30)
            assert err <= rel * scale, f"{name}: max |diff| {err:.3g} > {rel} * {scale:.3g}"

        emb = acts["hook_embed"]
        if "hook_pos_embed" in acts:
            emb = emb + acts["hook_pos_embed"]
        close("embed vs hidden_states[0]", emb, hs[0][0])
        n_layers = len(hs) - 1
        pos = len(ids)
        for layer in self.layers:
            p = f"blocks.{layer}."
            pre = acts[p + "hook_resid_pre"]
            post = acts[p + "hook_resid_post"]
            attn_out = acts[p + "hook_attn_out"]
            mlp_out = acts[p + "hook_mlp_out"]
            close(p + "resid_pre vs hidden_states", pre, hs[layer][0])
            if layer + 1 < n_layers:
                close(p + "resid_post vs hidden_states", post, hs[layer + 1][0])
            if a.parallel_residual:
                close(p + "resid_post = pre + attn_out + mlp_out", pre + attn_out + mlp_out, post)
            else:
                mid = acts[p + "hook_resid_mid"]
                close(p + "resid_post = mid + mlp_out", mid + mlp_out, post)
            scores = acts[p + "attn.hook_attn_scores"]
            pattern = acts[p + "attn.hook_pattern"]
            assert pattern.shape == (a.n_heads, pos, pos), pattern.shape
            # Probabilities are compared in absolute terms. transformers computes the scores in f32,
            # this script in f64 (rounded to f32): with scores in the hundreds (Qwen2's layer 0
            # has large q/k biases) the two differ by ~1e-5 in the logits and the probabilities.
            finite = scores[torch.isfinite(scores)]
            err = (torch.softmax(scores.double(), -1) - pattern.double()).abs().max().item()
            print(f"  {p}pattern vs softmax(scores): max |diff| {err:.2g} (max |score| {finite.abs().max():.4g})")
            assert err <= 1e-4, (p, err)
            assert torch.allclose(pattern.sum(-1), torch.ones(a.n_heads, pos), atol=1e-5)
            # z = pattern @ v (grouped-query heads share key/value heads).
            v = acts[p + "attn.hook_v"].transpose(0, 1)  # [nkv, pos, dh]
            v = v.repeat_interleave(a.n_heads // a.n_kv_heads, dim=0)
            z = (pattern.double() @ v.double()).transpose(0, 1)
            close(p + "z = pattern @ v", z, acts[p + "attn.hook_z"], 1e-4)
            for name, shape in [
                ("hook_resid_pre", (pos, None)),
                ("ln1.hook_normalized", (pos, None)),
                ("attn.hook_q", (pos, a.n_heads, a.d_head)),
                ("attn.hook_k", (pos, a.n_kv_heads, a.d_head)),
                ("attn.hook_v", (pos, a.n_kv_heads, a.d_head)),
                ("attn.hook_z", (pos, a.n_heads, a.d_head)),
                ("attn.hook_attn_scores", (a.n_heads, pos, pos)),
            ]:
                got = tuple(acts[p + name].shape)
                assert all(w is None or g == w for g, w in zip(got, shape)) and len(got) == len(shape), (name, got)
        last = len(a.blocks(self.model)) - 1
        if a.final is not None and last in self.layers:
            with torch.no_grad():
                logits = a.final(self.model, acts[f"blocks.{last}.hook_resid_post"])
            close("final(resid_post of last block) vs logits", logits, out.logits[0], 1e-4)


def hook_names(layers, parallel_residual=False, pos_embed=False):
    names = ["hook_embed"] + (["hook_pos_embed"] if pos_embed else [])
    per_block = [
        "hook_resid_pre",
        "ln1.hook_normalized",
        "attn.hook_q",
        "attn.hook_k",
        "attn.hook_v",
        "attn.hook_attn_scores",
        "attn.hook_pattern",
        "attn.hook_z",
        "hook_attn_out",
        "hook_resid_mid",
        "ln2.hook_normalized",
        "mlp.hook_post",
        "hook_mlp_out",
        "hook_resid_post",
    ]
    if parallel_residual:
        per_block.remove("hook_resid_mid")
    for layer in layers:
        names += [f"blocks.{layer}.{n}" for n in per_block]
    return names


def greedy(model, ids, n):
    """Greedy continuation by full recompute (no cache), never stopping early."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1]
            seq.append(int(torch.argmax(logits)))
    return seq[len(ids):]


def versions():
    import platform
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ["torch", "transformers", "tokenizers", "safetensors", "gguf", "numpy"]:
        out[pkg] = version(pkg)
    return out

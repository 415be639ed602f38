"""loupe against the Python tools a researcher would use instead: five workloads, measured side by
side in one run, on the same data and shapes, on this CPU.

Run through scripts/bench-vs-python, which builds loupe, fetches the model and corpora, and makes
a virtual environment with the pinned Python packages; it then runs this file. Every number in
the table comes from this run: nothing is copied from elsewhere. Each workload runs --repeat times
(default 3), loupe and Python taking turns, so that load from other processes on the machine falls
on both alike; the table gives the median and the range (min-max) of each side, and the ratio of
the medians.

The five workloads (loupe: the `loupe` binary with a config generated under the work directory;
Python: the code below, in this process, with torch.set_num_threads(2)):

1. capture: SmolLM2-135M-Instruct's residual stream after block 15 (`blocks.15.hook_resid_post`),
   contexts of 128 tokens in batches of 8, stored as f16, over about --capture-tokens tokens
   (default 20,000) of Wikipedia and fortune cookies taken one document from each in turn.
   loupe: `loupe capture`; its own "N tokens this run in S s" (timed from the first document read
   to the last shard written; the model load is not in it). Python: HF transformers' Llama on the
   same GGUF file (dequantised to f32 by transformers' GGUF loader, as
   scripts/make-golden-smollm2.py loads it, with the tokenizer's digit rule restored), running
   only blocks 0-15 (config.num_hidden_layers = 16) with a forward hook on block 15; documents
   tokenised and packed exactly as loupe packs them (every context starts with <|endoftext|>,
   which also separates documents; separator positions are not stored), activations written as
   f16 safetensors shards of 256 contexts. Timed from the first document read to the last shard
   written. Rate: stored tokens per second. The Python token ids are checked against loupe's
   store, and the activations compared.

2. sae-topk: one training step of a TopK SAE, d_in 576 -> d_sae 4608, k 32, batch 4096, on the
   activations of workload 1. loupe: `loupe sae train` (architecture topk, held_out 0 so that no
   evaluation runs, no checkpoint but the last, dead_window_tokens beyond the run so that AuxK
   never starts), for --sae-steps steps (default 12); the time of each step is read from the
   wall_time of its TensorBoard scalars (log_every is 1). Python: EleutherAI sparsify's recipe:
   encoder matmul + bias on x - b_dec, ReLU, torch.topk per row, decode as F.embedding_bag of the
   decoder rows weighted by the top activations (mode "sum") + b_dec, MSE, autograd backward, the
   decoder gradient's component parallel to the rows removed, torch.optim.Adam, decoder rows
   renormalised; batches drawn at random from the same activations held in memory (f32, scaled
   to mean squared norm d_in as loupe scales them). Rate for both: tokens per second of the steps
   after the first 2 (batch x (steps - 2) / (end of the last step - end of step 2)).

3. sae-relu: the same for a ReLU SAE (Anthropic's April 2024 recipe), same sizes and batch.
   loupe: architecture relu. PyTorch: ReLU encoder, dense decode f @ W_dec + b_dec, loss
   MSE + lambda * sum_i f_i * ||W_dec,i||, autograd, Adam.

4. probe: a k-sparse probe sweep, 2 rankings (mean difference, ANOVA F) x k in {1, 2, 4, 8, 16},
   on the first --probe-tokens tokens (default 100,000) of SmolLM2's `blocks.8.mlp.hook_post`
   (1536 neurons) over fortune cookies in German, English, Spanish and Italian (one of each in
   turn), feature "the token is German", 20% of the documents held out (the same documents on
   both sides: loupe's seeded per-document hash is reproduced here). The store is captured once
   by loupe and kept (set-up, not timed). loupe: `loupe probe train`, timed as the whole process
   (start-up and reading the model's tokenizer included). scikit-learn: Gurnee et al.'s recipe: read the store,
   standardise on the training split, rank by |mean difference| and by f_classif, and for each
   ranking and k fit LogisticRegression(class_weight="balanced", C=1) on the top k neurons and
   score F1 on the held-out split, the 10 fits spread over 2 processes (joblib, n_jobs=2: with
   binary labels, LogisticRegression's own n_jobs does nothing). Timed from reading the store to
   the last score. Seconds for the whole sweep (lower is better; the
   ratio is Python seconds / loupe seconds). F1 of both sides is printed as a check.

5. scope: batched patched generation, Superscopes' scale amplification: --scope-entities source
   prompts (default 4, the first of configs/entities.txt) x --scope-layers (default 4 and 8) x
   --scope-scales (default 3, 6, 9), the last token's residual stream patched into the last token
   of the entity-description prompt at the same layer, 10 greedy tokens, each generation judged
   by its all-MiniLM-L6-v2 cosine with the source prompt. loupe: `loupe scope`, its own
   "patched tokens/s". Python: Superscopes' own loop in HF transformers: per source prompt one
   forward with output_hidden_states, then per layer and scale a forward hook on the layer that
   overwrites the hidden state at the target's last position with scale x h (only in the
   prefill, as Superscopes' generation_mode does), model.generate (greedy, the same stop tokens
   as loupe, max_new_tokens 10), and the MiniLM judge (transformers, mean pooling, normalised).
   Patched tokens are counted as loupe counts them: per variant the patched position plus the
   generated tokens. Timed from the first source prompt to the last judgement, models loaded.

The Python side loads its models once, before anything is timed, and warms them up with one
untimed forward pass and one short generation; joblib's worker processes are started before the
probe sweep is timed. loupe runs as a fresh process each time, as it is used; its model loads
are not in its figures (each command's own timer starts after them).

Also measured, once per run: torch.matmul of two 4096x4096 f32 matrices (best of 5), in GFLOP/s,
and a numpy copy of a 1 GiB f32 array (best of 5), in GB/s counting bytes read and written. Each
workload's fraction of the matmul figure is rate x FLOPs per token / peak, with the FLOPs per
token of the work the workload needs (the same count for both sides; see main()):
capture 2 x parameters of blocks 0-15 + attention; TopK the dense encoder product plus the k
active latents' decode and gradients; ReLU five dense d_in x d_sae products (encoder and decoder
forward, decoder weight and input gradients, encoder weight gradient); scope the full forward
with the unembedding. The probe sweep has no FLOP count that means much: no fraction.

Other processes on the machine slow both sides, and not equally (PyTorch's OpenMP threads wait
for each other, and a busy core stalls them): the table's last column gives, per workload, how
many cores other processes kept busy while it ran (/proc/stat, less this process and the loupe
runs it waited for), and the header the same for the whole run. Trust the rows where it is near 0.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
LOUPE_HOME = Path(os.environ.get("LOUPE_HOME", Path.home() / ".cache" / "loupe"))
MODELS = LOUPE_HOME / "models"
DATA = LOUPE_HOME / "data"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

CAPTURE_HOOK = "blocks.15.hook_resid_post"
CAPTURE_LAYER = 15
CONTEXT_LENGTH = 128
CAPTURE_BATCH = 8
SHARD_CONTEXTS = 256
# Wikipedia articles and fortune cookies, one document from each in turn (the corpora
# scripts/fetch-data wikipedia fortunes fetches).
CAPTURE_CORPORA = ["wikipedia.jsonl", "fortunes.jsonl"]

SAE_D_IN = 576
SAE_D_SAE = 4608
SAE_K = 32
SAE_BATCH = 4096
SAE_LR = 4e-4
RELU_L1 = 5.0  # configs/sae-smollm2-l15-relu.toml

PROBE_LAYER = 8
PROBE_HOOK = f"blocks.{PROBE_LAYER}.mlp.hook_post"
PROBE_LANGS = ["de", "en", "es", "it"]
PROBE_POSITIVE = "de"
PROBE_KS = [1, 2, 4, 8, 16]
PROBE_HELD_OUT = 0.2
PROBE_SEED = 0
PROBE_C = 1.0

SCOPE_NEW_TOKENS = 10
# loupe's built-in entity_description target prompt (crates/loupe-scope/src/target.rs).
ENTITY_DESCRIPTION = (
    "Syria: Country in the Middle East, Leonardo DiCaprio: American actor, Samsung: South Korean "
    "multinational major appliance and consumer electronics corporation, x"
)

NO_DOC = 0xFFFFFFFF


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Running loupe


class Loupe:
    def __init__(self, binary):
        self.binary = str(binary)

    def run(self, *args):
        """Runs `loupe ARGS`; returns (stdout, stderr, wall seconds). Fails loudly on an error."""
        start = time.perf_counter()
        done = subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(
                f"loupe {' '.join(map(str, args))} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
            )
        return done.stdout, done.stderr, seconds


def toml_string(s):
    return json.dumps(str(s))  # a JSON string is a valid TOML basic string


def find(pattern, text, what):
    m = re.search(pattern, text)
    if not m:
        raise SystemExit(f"could not find {what} in loupe's output:\n{text[-2000:]}")
    return m


def fresh_dir(path):
    if path.exists():
        shutil.rmtree(path)
    return path


# ---------------------------------------------------------------------------------------------
# The Python side's models, loaded once for the run


class HF:
    """SmolLM2 in HF transformers, from the same GGUF loupe reads. Dequantising the GGUF takes
    about half a minute, so the dequantised model and the tokenizer are saved once under the work
    directory (keyed by the GGUF's size and modification time) and loaded from there."""

    def __init__(self, workdir):
        from tokenizers import pre_tokenizers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = MODELS / GGUF_FILE
        st = gguf.stat()
        cache = workdir / f"hf-smollm2-{st.st_size}-{int(st.st_mtime)}"
        if not (cache / "config.json").exists():
            log(f"converting {gguf} to a transformers directory (once): {cache}")
            tok = AutoTokenizer.from_pretrained(str(MODELS), gguf_file=GGUF_FILE)
            # transformers' GGUF tokenizer conversion drops SmolLM2's digit rule (digits split one
            # by one), which the model's own tokenizer and loupe's have: put it back, as
            # scripts/make-golden-smollm2.py does.
            tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Digits(individual_digits=True),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
                ]
            )
            model = AutoModelForCausalLM.from_pretrained(
                str(MODELS), gguf_file=GGUF_FILE, dtype=torch.float32
            )
            tmp = cache.with_name(cache.name + ".tmp")
            fresh_dir(tmp)
            tok.save_pretrained(str(tmp))
            # save_pretrained refuses a model loaded from GGUF; the weights are plain f32 tensors
            # by now, so write them and the config (less its GGUF note) as a model directory.
            model.config.save_pretrained(str(tmp))
            config = json.loads((tmp / "config.json").read_text())
            config.pop("quantization_config", None)
            (tmp / "config.json").write_text(json.dumps(config, indent=2))
            model.generation_config.save_pretrained(str(tmp))
            safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
            tmp.rename(cache)
        self.tokenizer = AutoTokenizer.from_pretrained(str(cache))
        self.model = AutoModelForCausalLM.from_pretrained(str(cache), dtype=torch.float32).eval()
        self.separator = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        # loupe stops generating at <|im_end|> and <|endoftext|> (Model::stop_tokens).
        self.stop_tokens = [self.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]

    def encode(self, text):
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]


# ---------------------------------------------------------------------------------------------
# Machine limits


def matmul_peak(size=4096, tries=5):
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.matmul(a, b)  # warm-up
    best = min(timed(lambda: torch.matmul(a, b)) for _ in range(tries))
    return 2 * size**3 / best / 1e9


def copy_bandwidth(nbytes=1 << 30, tries=5):
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touches every page of dst
    best = min(timed(lambda: np.copyto(dst, src)) for _ in range(tries))
    return 2 * nbytes / best / 1e9  # bytes read + bytes written


def cpu_seconds():
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and its waited-for
    children), or None where /proc/stat is missing."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy.
    busy = sum(fields[:3]) + sum(fields[5:8])
    t = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """How many cores other processes kept busy, on average, since it was made: the machine's busy
    CPU time less this process's and its reaped children's, per second of wall time."""

    def __init__(self):
        self.start = cpu_seconds()
        self.started = time.perf_counter()

    def cores(self):
        end = cpu_seconds()
        if not (self.start and end):
            return None
        ours = end[1] - self.start[1]
        return ((end[0] - self.start[0]) - ours) / (time.perf_counter() - self.started)


def timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def flops_per_token(config, layers, context, unembed):
    """Matmul FLOPs per token of `layers` blocks at an average attention span of `context`
    (benches/forward.rs's count), plus the unembedding when `unembed`."""
    d, m, v = config.hidden_size, config.intermediate_size, config.vocab_size
    d_head = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q = config.num_attention_heads * d_head
    kv = config.num_key_value_heads * d_head
    per_layer = 2 * (d * q * 2 + d * kv * 2 + 3 * d * m) + 4 * context * q
    return per_layer * layers + (2 * d * v if unembed else 0)


# ---------------------------------------------------------------------------------------------
# 1. capture


def capture_config(path, output, max_tokens):
    corpora = "\n".join(
        f'[[corpus]]\npath = {toml_string("$LOUPE_HOME/data/" + c)}\nlabels = ["lang", "source"]\n'
        for c in CAPTURE_CORPORA
    )
    path.write_text(
        f"""# Generated by scripts/bench_vs_python.py (workload 1).
model = "smollm2"
hooks = [{toml_string(CAPTURE_HOOK)}]
output = {toml_string(output)}
context_length = {CONTEXT_LENGTH}
batch_size = {CAPTURE_BATCH}
max_tokens = {max_tokens}
dtype = "f16"
shard_contexts = {SHARD_CONTEXTS}

{corpora}"""
    )


def loupe_capture(loupe, config):
    _, err, _ = loupe.run("capture", "--config", config)
    m = find(r"(\d+) tokens this run in ([\d.]+)s", err, "the capture's token count and time")
    return int(m.group(1)) / float(m.group(2))


def read_documents(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["text"]


def interleaved_documents(paths):
    """One document from each corpus in turn; an exhausted corpus drops out (corpus.rs)."""
    sources = [read_documents(p) for p in paths]
    i = 0
    while sources:
        i %= len(sources)
        doc = next(sources[i], None)
        if doc is None:
            del sources[i]
        else:
            i += 1
            yield doc


def pack_contexts(hf, documents, context_length):
    """loupe's packing (packing.rs): every context starts with the separator, documents follow
    one another with a separator before each, a long document continues in the next context.
    Yields (tokens, docs) per context; docs[i] is NO_DOC at separators."""
    sep = hf.separator
    pending = deque()
    doc_index = 0
    while True:
        tokens, docs = [sep], [NO_DOC]
        while len(tokens) < context_length:
            if not pending:
                text = next(documents, None)
                if text is None:
                    break
                ids = hf.encode(text)
                doc = doc_index
                doc_index += 1
                if not ids:
                    continue
                pending.append((sep, NO_DOC))
                pending.extend((t, doc) for t in ids)
            token, doc = pending.popleft()
            if doc == NO_DOC and len(tokens) == 1:
                continue  # the context's own first token already separates
            tokens.append(token)
            docs.append(doc)
        if len(tokens) == 1:
            return
        yield tokens, docs


def warm_up(hf):
    """One forward pass and one short generation, untimed: the first calls into torch and
    transformers set up thread pools and caches that a running notebook already has."""
    ids = torch.tensor([hf.encode(ENTITY_DESCRIPTION)])
    with torch.inference_mode():
        hf.model(ids)
        hf.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                          pad_token_id=hf.stop_tokens[0])


def python_capture(hf, output, max_tokens):
    """Returns (stored tokens per second, stored tokens)."""
    fresh_dir(output).mkdir(parents=True)
    model = hf.model
    captured = {}
    # Forward hook on block 15: its output is the residual stream after it (hook_resid_post).
    handle = model.model.layers[CAPTURE_LAYER].register_forward_hook(
        lambda module, args, out: captured.__setitem__("h", out[0] if isinstance(out, tuple) else out)
    )
    layers = model.config.num_hidden_layers
    model.config.num_hidden_layers = CAPTURE_LAYER + 1  # LlamaModel runs layers[:num_hidden_layers]
    try:
        start = time.perf_counter()
        documents = interleaved_documents([DATA / c for c in CAPTURE_CORPORA])
        contexts = pack_contexts(hf, documents, CONTEXT_LENGTH)
        stored, context_id, shards = 0, 0, []
        while stored < max_tokens:
            # One shard's contexts, as loupe collects them: up to SHARD_CONTEXTS, or until the
            # token budget is reached.
            chunk = []
            while len(chunk) < SHARD_CONTEXTS and stored < max_tokens:
                ctx = next(contexts, None)
                if ctx is None:
                    break
                chunk.append(ctx)
                stored += sum(d != NO_DOC for d in ctx[1])
            if not chunk:
                break
            acts, token_ids, doc_ids, context_ids, positions = [], [], [], [], []
            for b in range(0, len(chunk), CAPTURE_BATCH):
                batch = chunk[b : b + CAPTURE_BATCH]
                # Only the corpus's last context can be short: run unequal lengths one by one.
                groups = [batch] if len({len(t) for t, _ in batch}) == 1 else [[c] for c in batch]
                for group in groups:
                    ids = torch.tensor([t for t, _ in group])
                    with torch.inference_mode():
                        model.model(input_ids=ids, use_cache=False)
                    h = captured.pop("h")
                    for r, (tokens, docs) in enumerate(group):
                        keep = [i for i, d in enumerate(docs) if d != NO_DOC]
                        acts.append(h[r, keep].to(torch.float16))
                        token_ids += [tokens[i] for i in keep]
                        doc_ids += [docs[i] for i in keep]
                        context_ids += [context_id] * len(keep)
                        positions += keep
                        context_id += 1
            tensors = {
                CAPTURE_HOOK: torch.cat(acts).numpy(),
                "token_ids": np.array(token_ids, dtype=np.uint32),
                "doc_ids": np.array(doc_ids, dtype=np.uint32),
                "context_ids": np.array(context_ids, dtype=np.uint32),
                "positions": np.array(positions, dtype=np.uint32),
            }
            name = f"shard-{len(shards):05}.safetensors"
            safetensors.numpy.save_file(tensors, str(output / name))
            shards.append({"file": name, "tokens": len(token_ids)})
        # The store's index, in the layout read_store reads (a subset of loupe's manifest).
        (output / "manifest.json").write_text(json.dumps({"shards": shards, "tokens": stored}))
        seconds = time.perf_counter() - start
    finally:
        model.config.num_hidden_layers = layers
        handle.remove()
    return stored / seconds, stored


def read_store(store, names, max_tokens=None):
    """Concatenates tensors `names` over a loupe store's shards (manifest order), as numpy."""
    manifest = json.loads((store / "manifest.json").read_text())
    parts = {n: [] for n in names}
    rows = 0
    for shard in manifest["shards"]:
        tensors = safetensors.numpy.load_file(str(store / shard["file"]))
        for n in names:
            parts[n].append(tensors[n])
        rows += shard["tokens"]
        if max_tokens is not None and rows >= max_tokens:
            break
    out = {n: np.concatenate(p) for n, p in parts.items()}
    if max_tokens is not None:
        out = {n: a[:max_tokens] for n, a in out.items()}
    return out, manifest


def compare_captures(loupe_store, python_store):
    """Token ids must be identical; activations are compared by relative error per row."""
    a, _ = read_store(loupe_store, [CAPTURE_HOOK, "token_ids"])
    b, _ = read_store(python_store, [CAPTURE_HOOK, "token_ids"])
    n = min(len(a["token_ids"]), len(b["token_ids"]))
    same = int((a["token_ids"][:n] == b["token_ids"][:n]).sum())
    x = a[CAPTURE_HOOK][:n].astype(np.float32)
    y = b[CAPTURE_HOOK][:n].astype(np.float32)
    rel = np.linalg.norm(x - y, axis=1) / np.maximum(np.linalg.norm(y, axis=1), 1e-6)
    return (
        f"capture check: {same} of {n} token ids identical (loupe stored {len(a['token_ids'])}, "
        f"Python {len(b['token_ids'])}); activations' relative difference per row: median "
        f"{np.median(rel):.1e}, max {rel.max():.1e}"
    )


# ---------------------------------------------------------------------------------------------
# 2, 3. SAE training steps


def sae_config(path, store, output, architecture, steps):
    sparsity = (
        f"k = {SAE_K}\naux_coefficient = 0.03125\n"
        if architecture == "topk"
        else f"l1_coefficient = {RELU_L1}\nsparsity_warmup_fraction = 0.05\ndecoder_init_norm = 0.1\n"
    )
    path.write_text(
        f"""# Generated by scripts/bench_vs_python.py (workloads 2 and 3).
store = {toml_string(store)}
hook = {toml_string(CAPTURE_HOOK)}
output = {toml_string(output)}
architecture = "{architecture}"
d_sae = {SAE_D_SAE}
{sparsity}train_tokens = {steps * SAE_BATCH}
batch_size = {SAE_BATCH}
lr = {SAE_LR}
lr_warmup_steps = 20
b_dec_init = "geometric_median"
normalize_activations = true
# No latent can count as dead within the run, so AuxK never starts (the PyTorch side has none).
dead_window_tokens = 1_000_000_000_000
# No held-out split: no evaluation between steps. One checkpoint, after the last step.
held_out = 0
eval_every = 1_000_000
checkpoint_every = 1_000_000
log_every = 1
"""
    )


def tensorboard_step_times(run_dir):
    """wall_time of the first event at each step in a run's TensorBoard files: loupe writes each
    step's scalars as soon as the step is done (log_every = 1). Reads the TFRecord framing and the
    Event proto's fields 1 (wall_time, double) and 2 (step, varint) by hand."""

    def varint(buf, i):
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value, i

    times = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            record = data[pos + 12 : pos + 12 + length]
            pos += 12 + length + 4
            wall, step, i = None, 0, 0
            while i < len(record):
                key, i = varint(record, i)
                field, wire = key >> 3, key & 7
                if wire == 1:
                    if field == 1:
                        (wall,) = struct.unpack_from("<d", record, i)
                    i += 8
                elif wire == 0:
                    value, i = varint(record, i)
                    if field == 2:
                        step = value
                elif wire == 2:
                    length2, i = varint(record, i)
                    i += length2
                elif wire == 5:
                    i += 4
                else:
                    break
            if wall is not None and step > 0 and step not in times:
                times[step] = wall
    return times


def steady_rate(step_end_times, batch, skip=2):
    """Tokens/s over the steps after the first `skip`: step_end_times[s] ends step s (1-based)."""
    last = max(step_end_times)
    if last <= skip:
        raise SystemExit(f"need more than {skip} steps to measure a steady rate (got {last})")
    return batch * (last - skip) / (step_end_times[last] - step_end_times[skip])


def loupe_sae(loupe, config, output, steps):
    loupe.run("sae", "train", "--config", config)
    times = tensorboard_step_times(output)
    if sorted(times) != list(range(1, steps + 1)):
        raise SystemExit(
            f"{output}: expected TensorBoard scalars at steps 1..{steps}, found steps {sorted(times)}"
        )
    return steady_rate(times, SAE_BATCH)


def load_sae_inputs(store):
    """The capture's activations as f32, scaled to mean squared norm d_in (as loupe normalises),
    with loupe's default cut of rows above 10x the median norm (max_norm_factor)."""
    tensors, _ = read_store(store, [CAPTURE_HOOK])
    x = torch.from_numpy(tensors[CAPTURE_HOOK].astype(np.float32))
    norms = x.norm(dim=1)
    x = x[norms <= 10 * norms.median()]
    return x * (SAE_D_IN / x.pow(2).sum(1).mean()).sqrt()


def python_sae(x, architecture, steps, seed=0):
    """`steps` training steps; returns the steady rate in tokens/s."""
    torch.manual_seed(seed)
    d_in, d_sae = SAE_D_IN, SAE_D_SAE
    w_dec = torch.randn(d_sae, d_in)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * (1.0 if architecture == "topk" else 0.1)
    w_dec = torch.nn.Parameter(w_dec)
    w_enc = torch.nn.Parameter(w_dec.detach().clone())  # [d_sae, d_in]: the decoder's transpose as encoder
    b_enc = torch.nn.Parameter(torch.zeros(d_sae))
    b_dec = torch.nn.Parameter(x[:4096].mean(0).clone())
    params = [w_enc, b_enc, w_dec, b_dec]
    optimizer = torch.optim.Adam(params, lr=SAE_LR)
    n = x.shape[0]
    ends = {}
    for step in range(1, steps + 1):
        batch = x[torch.randint(0, n, (SAE_BATCH,))]
        if architecture == "topk":
            # sparsify: encoder on x - b_dec, ReLU, top k per row; decode as a weighted sum of k
            # decoder rows (embedding_bag), + b_dec.
            pre = F.linear(batch - b_dec, w_enc, b_enc)
            top_acts, top_indices = F.relu(pre).topk(SAE_K, dim=1, sorted=False)
            recon = F.embedding_bag(top_indices, w_dec, per_sample_weights=top_acts, mode="sum") + b_dec
            loss = (recon - batch).pow(2).sum(1).mean()
        else:
            # Anthropic April 2024: ReLU encoder (b_dec not subtracted), dense decoder, L1 of the
            # activations weighted by the decoder rows' norms.
            f = F.relu(F.linear(batch, w_enc, b_enc))
            recon = f @ w_dec + b_dec
            mse = (recon - batch).pow(2).sum(1).mean()
            loss = mse + RELU_L1 * (f * w_dec.norm(dim=1)).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if architecture == "topk":
            with torch.no_grad():
                # sparsify's remove_gradient_parallel_to_decoder_directions, then unit-norm rows.
                unit = w_dec / w_dec.norm(dim=1, keepdim=True)
                w_dec.grad -= (w_dec.grad * unit).sum(1, keepdim=True) * unit
        optimizer.step()
        if architecture == "topk":
            with torch.no_grad():
                w_dec /= w_dec.norm(dim=1, keepdim=True)
        ends[step] = time.perf_counter()
    return steady_rate(ends, SAE_BATCH)


# ---------------------------------------------------------------------------------------------
# 4. probe sweep


def probe_capture_config(path, output, tokens):
    corpora = "\n".join(
        '[[corpus]]\npath = "$LOUPE_HOME/data/fortunes.jsonl"\nlabels = ["lang", "source"]\n'
        f'only = {{ lang = ["{lang}"] }}\n'
        for lang in PROBE_LANGS
    )
    path.write_text(
        f"""# Generated by scripts/bench_vs_python.py: the labelled store of workload 4 (set-up, not timed).
model = "smollm2"
hooks = [{toml_string(PROBE_HOOK)}]
output = {toml_string(output)}
context_length = {CONTEXT_LENGTH}
batch_size = {CAPTURE_BATCH}
max_tokens = {tokens}
dtype = "f16"
shard_contexts = 128

{corpora}"""
    )


def probe_config(path, store, output, tokens):
    path.write_text(
        f"""# Generated by scripts/bench_vs_python.py (workload 4).
stores = [{toml_string(store)}]
hooks = [{toml_string(PROBE_HOOK)}]
output = {toml_string(output)}
max_tokens = {tokens}
held_out = {PROBE_HELD_OUT}
seed = {PROBE_SEED}
standardize = true
c = {PROBE_C}
rankings = ["mean_diff", "f_stat"]
ks = {json.dumps(PROBE_KS)}

[exact]
max_k = 0

[[feature]]
kind = "label"
field = "lang"
value = "{PROBE_POSITIVE}"
name = "german"
"""
    )


def loupe_probe(loupe, config, output):
    """Seconds of the sweep: the whole process's wall time (it reads the model's tokenizer, not
    its weights)."""
    fresh_dir(output)
    out, _, wall = loupe.run("probe", "train", "--config", config)
    find(r"(\d+) probes in", out, "the probe count")
    return wall


def loupe_probe_f1(output):
    import csv

    with open(output / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    f1_key = next(k for k in rows[0] if k.replace("held_out_", "").replace("held_out.", "") == "f1")
    return {(r["method"], int(r["k"])): float(r[f1_key]) for r in rows}


def held_out_documents(docs, fraction, seed):
    """loupe's split (reader.rs is_held_out): splitmix64 of (seed, document index)."""
    mask = np.uint64(0xFFFFFFFFFFFFFFFF)
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (np.uint64(seed) ^ (docs.astype(np.uint64) * golden)) + golden
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = (z ^ (z >> np.uint64(31))) & mask
    held = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction
    return held & (docs != NO_DOC)


def fit_and_score(x_train, y_train, x_test, y_test):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    clf = LogisticRegression(class_weight="balanced", C=PROBE_C, max_iter=1000)
    clf.fit(x_train, y_train)
    return f1_score(y_test, clf.predict(x_test))


def python_probe(store, tokens):
    """Returns (seconds, {(ranking, k): held-out F1})."""
    from joblib import Parallel, delayed
    from sklearn.feature_selection import f_classif

    # joblib's worker processes take seconds to start the first time: start them before the clock,
    # as a notebook that has run one sweep already has them.
    Parallel(n_jobs=2)(delayed(abs)(i) for i in range(2))
    start = time.perf_counter()
    tensors, manifest = read_store(store, [PROBE_HOOK, "doc_ids", "labels.lang"], max_tokens=tokens)
    x = tensors[PROBE_HOOK].astype(np.float32)
    langs = manifest["labels"]["values"][manifest["labels"]["fields"].index("lang")]
    y = tensors["labels.lang"] == langs.index(PROBE_POSITIVE)
    held = held_out_documents(tensors["doc_ids"], PROBE_HELD_OUT, PROBE_SEED)
    x_train, y_train, x_test, y_test = x[~held], y[~held], x[held], y[held]
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1
    x_train = (x_train - mean) / std
    x_test = (x_test - mean) / std
    scores = {
        "mean_diff": np.abs(x_train[y_train].mean(0) - x_train[~y_train].mean(0)),
        "f_stat": np.nan_to_num(f_classif(x_train, y_train)[0]),
    }
    jobs = []
    for ranking, score in scores.items():
        order = np.argsort(-score, kind="stable")
        for k in PROBE_KS:
            top = order[:k]
            jobs.append(((ranking, k), x_train[:, top], x_test[:, top]))
    f1s = Parallel(n_jobs=2)(delayed(fit_and_score)(a, y_train, b, y_test) for _, a, b in jobs)
    seconds = time.perf_counter() - start
    return seconds, {key: f1 for (key, _, _), f1 in zip(jobs, f1s)}


# ---------------------------------------------------------------------------------------------
# 5. patched generation


def scope_config(path, output, entities, layers, scales):
    path.write_text(
        f"""# Generated by scripts/bench_vs_python.py (workload 5).
model = "smollm2"
out = {toml_string(output)}

[source]
prompts = {json.dumps(entities, ensure_ascii=False)}
site = "resid_post"
layers = {json.dumps(layers)}
position = "last"

[target]
prompt = "entity_description"
layer = "source"
position = "last"

[generate]
max_new_tokens = {SCOPE_NEW_TOKENS}
batch_rows = 256

[judge]
threshold = 0.3

[[amplifier]]
kind = "scale"
values = {json.dumps(scales)}
"""
    )


def loupe_scope(loupe, config, output):
    fresh_dir(output)
    _, err, _ = loupe.run("scope", "--config", config)
    m = find(r"(\d+) generated .* in ([\d.]+)s: .* ([\d.]+) patched tokens/s", err, "the patched tokens/s")
    return float(m.group(3))


def loupe_scope_generations(output):
    records = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines() if line]
    return {(r["source"], r["layer"], float(r["value"])): r["tokens"] for r in records}


class MiniLM:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: mean of the last hidden states over the
    real tokens, L2-normalised."""

    def __init__(self):
        from transformers import AutoModel, AutoTokenizer

        path = MODELS / "all-MiniLM-L6-v2"
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()

    def embed(self, texts):
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def python_scope(hf, judge, entities, layers, scales):
    """Superscopes' loop, one variant at a time. Returns (patched tokens/s, generations)."""
    model, tok = hf.model, hf.tokenizer
    target = torch.tensor([hf.encode(ENTITY_DESCRIPTION)])
    position = target.shape[1] - 1
    patched_tokens = 0
    generations = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for entity in entities:
            source = torch.tensor([hf.encode(entity)])
            hidden = model(source, output_hidden_states=True).hidden_states
            source_embedding = judge.embed([entity])
            for layer in layers:
                h = hidden[layer + 1][0, -1]  # the residual stream leaving block `layer`

                for scale in scales:
                    value = h * scale

                    def patch(module, args, out, value=value):
                        hs = out[0] if isinstance(out, tuple) else out
                        if hs.shape[1] == 1:
                            return  # a generation step: the prompt's position is in the cache
                        hs[0, position] = value

                    handle = model.model.layers[layer].register_forward_hook(patch)
                    try:
                        output = model.generate(
                            target,
                            attention_mask=torch.ones_like(target),
                            max_new_tokens=SCOPE_NEW_TOKENS,
                            do_sample=False,
                            eos_token_id=hf.stop_tokens,
                            pad_token_id=hf.stop_tokens[0],
                        )
                    finally:
                        handle.remove()
                    new = output[0, target.shape[1] :].tolist()
                    # generate pads finished rows; a single row never pads, but be exact.
                    for i, t in enumerate(new):
                        if t in hf.stop_tokens:
                            new = new[: i + 1]
                            break
                    text = tok.decode(new, skip_special_tokens=True)
                    float(source_embedding[0] @ judge.embed([text])[0])  # the judge's score
                    patched_tokens += 1 + len(new)
                    generations[(entity, layer, float(scale))] = new
    return patched_tokens / (time.perf_counter() - start), generations


# ---------------------------------------------------------------------------------------------
# The run


def spread(values):
    return statistics.median(values), min(values), max(values)


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def machine():
    model = "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = re.search(r"Model name:\s*(.+)", lscpu).group(1).strip()
    except (OSError, AttributeError):
        model = platform.processor() or model
    return model, os.cpu_count()


def versions(loupe_binary):
    import sklearn
    import transformers

    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    mtime = Path(loupe_binary).stat().st_mtime
    built = datetime.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M")
    committed = git("log", "-1", "--format=%ct")
    if committed and mtime < int(committed):
        # Run with --no-build after a commit: the binary is from an earlier tree than the one named.
        built += " (before that commit: built from an earlier tree)"
    return {
        "loupe": f"{commit}, binary built {built}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--loupe", default=str(REPO / "target" / "release" / "loupe"), help="the loupe binary")
    p.add_argument("--workdir", default=str(REPO / "target" / "bench"), help="generated configs, stores, runs")
    p.add_argument("--results", default=str(REPO / "benches" / "RESULTS.md"), help="where the table is written")
    p.add_argument("--repeat", type=int, default=3, help="runs of each workload on each side (median and range)")
    p.add_argument("--capture-tokens", type=int, default=20_000)
    p.add_argument("--sae-steps", type=int, default=12, help="training steps per run (the first 2 are not timed)")
    p.add_argument("--probe-tokens", type=int, default=100_000)
    p.add_argument("--scope-entities", type=int, default=4)
    p.add_argument("--scope-layers", default="4,8")
    p.add_argument("--scope-scales", default="3,6,9")
    p.add_argument("--only", default="capture,sae-topk,sae-relu,probe,scope", help="comma-separated workloads")
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a smoke test (capture 5k tokens, 4 SAE steps, 20k probe tokens, "
        "2 entities x 1 layer x 2 scales, 1 repeat); its table is not written to --results",
    )
    args = p.parse_args()
    if args.quick:
        args.repeat = 1
        args.capture_tokens = 5_000
        args.sae_steps = 4
        args.probe_tokens = 20_000
        args.scope_entities = 2
        args.scope_layers = "8"
        args.scope_scales = "3,6"
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    known = {"capture", "sae-topk", "sae-relu", "probe", "scope"}
    if set(args.only) - known:
        unknown = ", ".join(sorted(set(args.only) - known))
        p.error(f"unknown workload(s) {unknown}; known: {', '.join(sorted(known))}")
    if args.repeat < 1 or args.sae_steps < 3:
        p.error("--repeat must be at least 1 and --sae-steps at least 3")
    return args


def main():
    args = parse_args()
    torch.set_num_threads(2)
    loupe = Loupe(args.loupe)
    work = Path(args.workdir).resolve()
    configs = work / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    run_start = time.perf_counter()
    whole_run = OtherLoad()

    log("measuring the machine: f32 matmul 4096x4096 (torch), copy of 1 GiB (numpy)")
    peak = matmul_peak()
    bandwidth = copy_bandwidth()
    log(f"  matmul {peak:.1f} GFLOP/s, copy {bandwidth:.1f} GB/s")

    log("loading SmolLM2 in transformers")
    hf = HF(work)
    warm_up(hf)
    cfg = hf.model.config

    # Per workload: unit, higher_is_better, FLOPs per token (None: no fraction), loupe and Python
    # values per repeat, and notes.
    rows = {}
    notes = []
    repeat = args.repeat
    store = work / "store-l15"  # the capture every SAE run reads: loupe's, from its last run

    needs_store = any(w in args.only for w in ("sae-topk", "sae-relu"))
    if "capture" in args.only or (needs_store and not (store / "manifest.json").exists()):
        log(f"1. capture: {args.capture_tokens} tokens")
        others = OtherLoad()
        config = configs / "capture.toml"
        capture_config(config, store, args.capture_tokens)
        loupe_rates, python_rates = [], []
        for r in range(repeat):
            fresh_dir(store)
            loupe_rates.append(loupe_capture(loupe, config))
            rate, _ = python_capture(hf, work / "store-l15-python", args.capture_tokens)
            python_rates.append(rate)
            log(f"  run {r + 1}: loupe {loupe_rates[-1]:.0f}, Python {python_rates[-1]:.0f} tokens/s")
        rows["capture"] = (
            "tokens/s",
            True,
            flops_per_token(cfg, CAPTURE_LAYER + 1, CONTEXT_LENGTH / 2, unembed=False),
            loupe_rates,
            python_rates,
            others.cores(),
        )
        notes.append(compare_captures(store, work / "store-l15-python"))
        log("  " + notes[-1])

    for arch in ("topk", "relu"):
        name = f"sae-{arch}"
        if name not in args.only:
            continue
        log(f"{2 if arch == 'topk' else 3}. {name}: {args.sae_steps} steps of batch {SAE_BATCH}")
        config = configs / f"{name}.toml"
        output = work / name
        sae_config(config, store, output, arch, args.sae_steps)
        x = load_sae_inputs(store)
        others = OtherLoad()
        loupe_rates, python_rates = [], []
        for r in range(repeat):
            fresh_dir(output)
            loupe_rates.append(loupe_sae(loupe, config, output, args.sae_steps))
            python_rates.append(python_sae(x, arch, args.sae_steps, seed=r))
            log(f"  run {r + 1}: loupe {loupe_rates[-1]:.0f}, PyTorch {python_rates[-1]:.0f} tokens/s")
        if arch == "topk":
            # Encoder product, then per active latent: decode, decoder-row gradient, encoder-row
            # gradient (2 FLOPs per multiply-add each).
            flops = 2 * SAE_D_IN * SAE_D_SAE + 6 * SAE_K * SAE_D_IN
        else:
            flops = 5 * 2 * SAE_D_IN * SAE_D_SAE
        rows[name] = ("tokens/s", True, flops, loupe_rates, python_rates, others.cores())

    if "probe" in args.only:
        log(f"4. probe: 2 rankings x k in {PROBE_KS} on {args.probe_tokens} tokens x 1536 neurons")
        probe_store = work / f"store-l{PROBE_LAYER}-mlp-lang"
        capture = configs / "probe-capture.toml"
        probe_capture_config(capture, probe_store, args.probe_tokens)
        manifest = probe_store / "manifest.json"
        if not manifest.exists() or json.loads(manifest.read_text())["tokens"] < args.probe_tokens:
            log(f"  capturing the labelled store once (set-up, not timed): {probe_store}")
            fresh_dir(probe_store)
            _, _, seconds = loupe.run("capture", "--config", capture)
            log(f"  captured in {seconds:.0f} s")
        config = configs / "probe.toml"
        output = work / "probe"
        probe_config(config, probe_store, output, args.probe_tokens)
        others = OtherLoad()
        loupe_seconds, python_seconds = [], []
        for r in range(repeat):
            loupe_seconds.append(loupe_probe(loupe, config, output))
            seconds, f1_python = python_probe(probe_store, args.probe_tokens)
            python_seconds.append(seconds)
            log(f"  run {r + 1}: loupe {loupe_seconds[-1]:.2f} s, scikit-learn {python_seconds[-1]:.2f} s")
        f1_loupe = loupe_probe_f1(output)
        per_ranking = [
            f"{ranking} "
            + ", ".join(f"k{k} {f1_loupe[(ranking, k)]:.3f}/{f1_python[(ranking, k)]:.3f}" for k in PROBE_KS)
            for ranking in ("mean_diff", "f_stat")
        ]
        notes.append("probe check, held-out F1 loupe / scikit-learn: " + "; ".join(per_ranking))
        log("  " + notes[-1])
        # Reap joblib's worker processes, so that their CPU time counts as this run's.
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
        rows["probe"] = ("s per sweep", False, None, loupe_seconds, python_seconds, others.cores())

    if "scope" in args.only:
        entities = [e for e in (REPO / "configs" / "entities.txt").read_text().splitlines() if e.strip()]
        entities = entities[: args.scope_entities]
        layers = [int(v) for v in args.scope_layers.split(",")]
        scales = [float(v) for v in args.scope_scales.split(",")]
        variants = len(entities) * len(layers) * len(scales)
        log(f"5. scope: {len(entities)} entities x layers {layers} x scales {scales} = {variants} variants")
        config = configs / "scope.toml"
        output = work / "scope"
        scope_config(config, output, entities, layers, scales)
        judge = MiniLM()
        others = OtherLoad()
        loupe_rates, python_rates = [], []
        for r in range(repeat):
            loupe_rates.append(loupe_scope(loupe, config, output))
            rate, generations = python_scope(hf, judge, entities, layers, scales)
            python_rates.append(rate)
            log(f"  run {r + 1}: loupe {loupe_rates[-1]:.1f}, Python {python_rates[-1]:.1f} patched tokens/s")
        ours = loupe_scope_generations(output)
        same = sum(ours.get(key) == tokens for key, tokens in generations.items())
        notes.append(
            f"scope check: {same} of {len(generations)} greedy generations token for token the same "
            "in loupe and transformers"
        )
        log("  " + notes[-1])
        target_tokens = len(hf.encode(ENTITY_DESCRIPTION))
        flops = flops_per_token(cfg, cfg.num_hidden_layers, target_tokens + SCOPE_NEW_TOKENS / 2, unembed=True)
        rows["scope"] = ("patched tokens/s", True, flops, loupe_rates, python_rates, others.cores())

    total = time.perf_counter() - run_start
    report = render(args, rows, notes, peak, bandwidth, total, whole_run.cores())
    print(report)
    if args.quick:
        log(f"--quick: not written to {args.results}")
    elif set(args.only) != {"capture", "sae-topk", "sae-relu", "probe", "scope"}:
        log(f"--only: not written to {args.results}")
    else:
        Path(args.results).write_text(report)
        log(f"written to {args.results}")


def workload_titles(args):
    variants = (
        args.scope_entities * len(args.scope_layers.split(",")) * len(args.scope_scales.split(","))
    )
    return {
        "capture": f"1. capture, {CAPTURE_HOOK}, {CAPTURE_BATCH} × {CONTEXT_LENGTH}, f16 store",
        "sae-topk": f"2. TopK SAE step, {SAE_D_IN} → {SAE_D_SAE}, k {SAE_K}, batch {SAE_BATCH}",
        "sae-relu": f"3. ReLU SAE step, {SAE_D_IN} → {SAE_D_SAE}, batch {SAE_BATCH}",
        "probe": f"4. probe sweep, 2 rankings × {len(PROBE_KS)} k, {args.probe_tokens:,} × 1536",
        "scope": f"5. patched generation, {variants} variants × {SCOPE_NEW_TOKENS} tokens",
    }


PYTHON_TOOLS = {
    "capture": "transformers",
    "sae-topk": "PyTorch (sparsify)",
    "sae-relu": "PyTorch",
    "probe": "scikit-learn",
    "scope": "transformers (Superscopes)",
}


def render(args, rows, notes, peak, bandwidth, total, others):
    cpu, cores = machine()
    v = versions(args.loupe)
    lines = [
        "# loupe against Python",
        "",
        f"Written by `scripts/bench-vs-python` on {datetime.date.today().isoformat()} "
        f"(the whole run took {total / 60:.1f} min; --repeat {args.repeat}). Do not edit by hand: run it again.",
        "",
        f"- machine: {cpu}, {cores} cores (lscpu), {platform.system()} {platform.release()}"
        + (
            f"; other processes used {others:.2f} cores on average during the run"
            + (" (they slow both sides, and not equally: take these figures with care)" if others > 0.25 else "")
            if others is not None
            else ""
        ),
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- limits measured in this run: f32 matmul (torch.matmul, 4096 × 4096, best of 5) {peak:.1f} GFLOP/s; "
        f"memory copy (numpy, 1 GiB f32, best of 5, bytes read + written) {bandwidth:.1f} GB/s",
        f"- each side ran each workload {args.repeat} time(s), taking turns; median (min-max). "
        "Ratio: loupe ÷ Python for rates, Python s ÷ loupe s for the probe sweep's seconds; above 1, loupe is faster. "
        "% peak: rate × FLOPs per token ÷ the matmul figure. Others' cores: the CPU other processes on the "
        "machine kept busy, on average, while the workload ran (from /proc/stat); above a few tenths the "
        "figures of that row say more about the contention than about the tools, and PyTorch's OpenMP "
        "threads suffer from it more than loupe's.",
        "",
        "| workload | Python tool | unit | loupe | Python | loupe ÷ Python | FLOP/token | loupe % peak "
        "| Python % peak | others' cores |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    titles = workload_titles(args)
    for name, (unit, higher, flops, ours, theirs, busy) in rows.items():
        (m1, lo1, hi1), (m2, lo2, hi2) = spread(ours), spread(theirs)
        ratio = m1 / m2 if higher else m2 / m1
        frac = (lambda m: f"{100 * m * flops / (peak * 1e9):.0f}%") if flops else (lambda m: "n/a")
        lines.append(
            f"| {titles[name]} | {PYTHON_TOOLS[name]} | {unit} | {fmt(m1)} ({fmt(lo1)}-{fmt(hi1)}) | "
            f"{fmt(m2)} ({fmt(lo2)}-{fmt(hi2)}) | {ratio:.2f}× | "
            + (f"{flops / 1e6:.1f} M" if flops else "n/a")
            + f" | {frac(m1)} | {frac(m2)} | "
            + ("n/a" if busy is None else f"{busy:.2f}")
            + " |"
        )
    lines += [
        "",
        "How each figure is measured (the docstring of `scripts/bench_vs_python.py` has the details):",
        "",
        f"- capture: stored tokens ÷ seconds from the first document read to the last shard written, model loaded "
        f"(loupe: its own \"tokens this run\" line); {args.capture_tokens:,} tokens of Wikipedia and fortunes; "
        "transformers runs blocks 0-15 only.",
        f"- SAE steps: batch × steps ÷ time, over steps 3-{args.sae_steps} of {args.sae_steps} (loupe: the wall_time of each "
        "step's TensorBoard scalars); on the capture's activations, f32. AuxK is kept off on the loupe side (no dead "
        "latents within the run), as sparsify's recipe here has none.",
        f"- probe: seconds for the whole sweep on {args.probe_tokens:,} tokens, reading the store included "
        "(loupe: the whole process's wall time; scikit-learn: LogisticRegression "
        "class_weight=\"balanced\", 10 fits over 2 processes).",
        f"- scope: patched tokens (the patched position + the generated tokens, per variant) ÷ seconds, source "
        f"prompts' forward passes and the MiniLM judge included; {args.scope_entities} entities × layers "
        f"{args.scope_layers} × scales {args.scope_scales}, {SCOPE_NEW_TOKENS} greedy tokens; loupe batches all variants "
        "of a source prompt, Superscopes' loop runs one at a time.",
        "- FLOP/token: the arithmetic each workload needs, counted the same for both sides: capture 2 × the "
        "parameters of blocks 0-15 + attention at an average span of 64; TopK the encoder product "
        "(2 × 576 × 4608) + decode and gradients of the 32 active latents (sparsify's autograd also "
        "runs two dense products in the backward pass, which this count leaves out); ReLU five dense "
        "576 × 4608 products; patched generation the whole forward pass with the unembedding. No count for "
        "the probe sweep.",
        "",
        "Checks made in the same run:",
        "",
    ]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

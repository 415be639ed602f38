"""Golden fixture made by EleutherAI's sparsify itself, so that loupe can prove it reads and writes
sparsify's layout.

Provenance. Everything under tests/fixtures/sparsify/ (but loupe-written/*/ cfg.json and
sae.safetensors, which loupe wrote) was written by sparsify's own code: eai-sparsify 1.3.3 on
torch 2.15.0 (CPU), safetensors 0.8.0, numpy 2.4.6. The SAEs are built through sparsify's
`SparseCoderConfig` and `SparseCoder` and saved with `save_to_disk`; the reference outputs come
from loading each directory back with `SparseCoder.load_from_disk` and running its forward.

Run once, from the repository root, in a throwaway environment (torch can come from another
environment through a .pth file, as it did here from the bench's virtualenv):

    python3 -m venv /tmp/spenv
    /tmp/spenv/bin/pip install eai-sparsify==1.3.3
    /tmp/spenv/bin/python scripts/make-sparsify-fixture.py            # mode `make`

Mode `make` (the default) writes, in sparsify's layout of one directory per hook point:

    run/layers.3/       a TopK SAE: d_in = 16, num_latents = 48, k = 5, random weights, nonzero
                        encoder bias and b_dec, decoder rows not of unit norm; with
                        `reference.safetensors` holding `input` [8, 16], sparsify's
                        `feature_acts` (its top-k activations scattered into [8, 48]) and
                        `forward` (its `sae_out`), all float32.
    run/layers.3.mlp/   a skip transcoder (transcode = true, skip_connection = true): d_in = 16,
                        num_latents = 48, k = 5; random encoder weight and bias, W_dec, b_dec
                        and W_skip (sparsify initialises W_dec and W_skip to zeros; here all
                        are random and nonzero so that the fixture exercises the skip term);
                        with `reference.safetensors` holding `input` [8, 16] (the transcoder's
                        input, i.e. the input of the module `layers.3.mlp`), `feature_acts`
                        [8, 48] and `forward` [8, 16] (its `sae_out`, skip term included), all
                        float32. sparsify's transcoder rule, checked here against its output:
                        b_dec is not subtracted from the input (sparsify does that only when
                        transcode = false); pre = relu(x @ encoder.weight.T + encoder.bias);
                        the top k of pre are kept; and
                        sae_out = acts @ W_dec + b_dec + x @ W_skip.T.

The layers.3 files come out byte-identical to those of the first run of this script (same seed;
the transcoder's random draws all come after them).

Mode `check-loupe DIR...` loads each DIR (an SAE or transcoder that loupe wrote in sparsify's
layout) with `SparseCoder.load_from_disk(DIR)`, runs its forward on the tensor `input` of
DIR/reference-input.safetensors and writes DIR/sparsify-outputs.safetensors with
`feature_acts` and `forward` (for a transcoder, `input` is the transcoder's input and `forward`
its prediction of the module's output, W_skip term included when skip_connection = true):

    cargo run --release -p loupe-sae --example write-sparsify-fixture
    /tmp/spenv/bin/python scripts/make-sparsify-fixture.py check-loupe \
        tests/fixtures/sparsify/loupe-written/layers.15
"""

import os
import sys
from pathlib import Path

# On a CPU, sparsify's Triton decoder has no driver; its own eager decoder (embedding_bag) runs.
os.environ["SPARSIFY_DISABLE_TRITON"] = "1"

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sparsify"


def dense_acts(out, num_latents):
    acts = torch.zeros(out.latent_acts.shape[0], num_latents)
    return acts.scatter_(1, out.latent_indices, out.latent_acts.float())


def make():
    torch.manual_seed(0)
    d_in, latents = 16, 48
    sae = SparseCoder(d_in, SparseCoderConfig(num_latents=latents, k=5))
    with torch.no_grad():
        sae.encoder.weight.normal_(0, 0.5)
        sae.encoder.bias.normal_(0, 0.3)
        sae.W_dec.normal_(0, 0.7)  # rows not of unit norm
        sae.b_dec.normal_(0, 0.4)
    out_dir = ROOT / "run" / "layers.3"
    sae.save_to_disk(out_dir)
    loaded = SparseCoder.load_from_disk(out_dir)
    x = torch.randn(8, d_in) * 2.0
    with torch.no_grad():
        out = loaded(x)
    save_file(
        {
            "input": x.contiguous(),
            "feature_acts": dense_acts(out, latents).contiguous(),
            "forward": out.sae_out.float().contiguous(),
        },
        str(out_dir / "reference.safetensors"),
    )
    print(f"wrote {out_dir}")

    transcoder = SparseCoder(
        d_in, SparseCoderConfig(num_latents=latents, k=5, transcode=True, skip_connection=True)
    )
    with torch.no_grad():
        transcoder.encoder.weight.normal_(0, 0.5)
        transcoder.encoder.bias.normal_(0, 0.3)
        transcoder.W_dec.normal_(0, 0.7)  # sparsify starts a transcoder's W_dec at zero
        transcoder.b_dec.normal_(0, 0.4)
        transcoder.W_skip.normal_(0, 0.3)  # sparsify starts W_skip at zero
    skip_dir = ROOT / "run" / "layers.3.mlp"
    transcoder.save_to_disk(skip_dir)
    loaded = SparseCoder.load_from_disk(skip_dir)
    assert loaded.cfg.transcode and loaded.W_skip is not None
    x = torch.randn(8, d_in) * 2.0
    with torch.no_grad():
        out = loaded(x)
    acts = dense_acts(out, latents)
    # The rule sparsify applies (no b_dec subtracted from a transcoder's input; skip term added).
    pre = torch.relu(x @ loaded.encoder.weight.T + loaded.encoder.bias)
    top = pre.topk(5, dim=1)
    expect = torch.zeros(8, latents).scatter_(1, top.indices, top.values)
    assert torch.allclose(acts, expect, atol=1e-6)
    expect = acts @ loaded.W_dec + loaded.b_dec + x @ loaded.W_skip.T
    assert torch.allclose(out.sae_out.float(), expect, atol=1e-5)
    assert (x @ loaded.W_skip.T).abs().max() > 0.1 and loaded.b_dec.abs().min() > 0
    save_file(
        {
            "input": x.contiguous(),
            "feature_acts": acts.contiguous(),
            "forward": out.sae_out.float().contiguous(),
        },
        str(skip_dir / "reference.safetensors"),
    )
    print(f"wrote {skip_dir}")


def check_loupe(dirs):
    for d in map(Path, dirs):
        sae = SparseCoder.load_from_disk(d)
        x = load_file(str(d / "reference-input.safetensors"))["input"]
        with torch.no_grad():
            out = sae(x)
        save_file(
            {
                "feature_acts": dense_acts(out, sae.num_latents).contiguous(),
                "forward": out.sae_out.float().contiguous(),
            },
            str(d / "sparsify-outputs.safetensors"),
        )
        print(
            f"{d}: sparsify loaded d_in={sae.d_in} num_latents={sae.num_latents} k={sae.cfg.k} "
            f"transcode={sae.cfg.transcode} skip_connection={sae.W_skip is not None}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "check-loupe":
        check_loupe(sys.argv[2:])
    else:
        make()

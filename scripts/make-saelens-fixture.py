"""Golden fixture made by SAELens itself, so that loupe can prove it reads and writes SAELens's format.

Provenance. Everything under tests/fixtures/saelens/ was written by SAELens's own code:
sae-lens 6.54.12 (with transformer-lens 3.9.0) on torch 2.15.0 (CPU), safetensors 0.8.0,
numpy 2.4.6. The SAEs are built through SAELens's config classes and saved with its own save
methods; the reference outputs come from loading each directory back with SAELens's own loader
(`SAE.load_from_disk`) and running its encode/decode/forward.

Run once, from the repository root, in a throwaway environment:

    python3 -m venv /tmp/saeenv
    /tmp/saeenv/bin/pip install sae-lens==6.54.12
    /tmp/saeenv/bin/python scripts/make-saelens-fixture.py            # mode `make`

(The transcoder directories below were made in such an environment whose torch came, through a
.pth file naming target/bench-venv/lib/python3.11/site-packages, from the bench's virtualenv.)

Mode `make` (the default) writes, for each ARCH directory below, `cfg.json` and
`sae_weights.safetensors` (SAELens's layout) and `reference.safetensors` holding `input` [8, 16]
and SAELens's `feature_acts` (= sae.encode(input)), `reconstruction` (= sae.decode(feature_acts))
and `forward` (= sae(input)), all float32. Every SAE has d_in = 16, d_sae = 48, random nonzero
b_enc and b_dec, decoder rows that are not unit norm, and metadata model_name = "smollm2",
hook_name = "blocks.15.hook_resid_post".

    standard/    StandardSAEConfig, apply_b_dec_to_input = true (SAELens's default)
    topk/        TopKSAEConfig, k = 4, apply_b_dec_to_input = false,
                 rescale_acts_by_decoder_norm = false (the inference default)
    jumprelu/    JumpReLUSAEConfig, apply_b_dec_to_input = false, per-latent thresholds
    batchtopk/   a BatchTopKTrainingSAE (k = 4, rescale_acts_by_decoder_norm = true, the
                 training default; apply_b_dec_to_input = true) saved with
                 `save_inference_model`, which is how SAELens ships a BatchTopK SAE: as a
                 "jumprelu" SAE whose threshold is the learned batch threshold repeated for
                 every latent, with the decoder norms folded into W_enc, b_enc and W_dec.
    gemma-scope/ params.npz in Gemma Scope's published layout (np.savez of W_enc [d_in, d_sae],
                 W_dec [d_sae, d_in], b_enc, b_dec, threshold; float32). Its reference is
                 computed by SAELens's Gemma Scope loader (`gemma_2_sae_huggingface_loader`,
                 with its Hugging Face download pointed at the local file) and checked against
                 the JumpReLU formula acts = relu(pre) * (pre > threshold),
                 pre = x @ W_enc + b_enc (no b_dec subtracted from the input).
    transcoder/  TranscoderConfig (architecture "transcoder", ReLU), d_in = 16, d_out = 16,
                 d_sae = 48, apply_b_dec_to_input = false (SAELens refuses true for
                 transcoders), metadata hook_name = "blocks.3.ln2.hook_normalized" and
                 hook_name_out = "blocks.3.hook_mlp_out" (the metadata key SAELens's own
                 transcoder loaders and HookedSAETransformer use for the output hook).
    skip-transcoder/
                 SkipTranscoderConfig (architecture "skip_transcoder"), the same plus a random
                 nonzero W_skip [d_out, d_in] (SAELens starts it at zero).

For the transcoders, `input` is the transcoder's input (the activation at hook_name),
`reconstruction` = sae.decode(feature_acts) = feature_acts @ W_dec + b_dec (no skip term) and
`forward` = sae(input), which for the skip transcoder adds input @ W_skip.T; the script checks
both against those formulas, with feature_acts = relu(input @ W_enc + b_enc).

Mode `make-transcoders` writes only transcoder/ and skip-transcoder/ (they draw from their own
seeded generator, so `make` writes the same bytes for them and for the directories above).
Mode `check-loupe DIR...` loads each DIR (an SAE or transcoder that loupe wrote in SAELens's
layout) with `SAE.load_from_disk(DIR)`, which picks the class from cfg.json's `architecture`,
runs it on the tensor `input` of DIR/reference-input.safetensors and writes
DIR/saelens-outputs.safetensors with `feature_acts`, `reconstruction` and `forward`, printing
the architecture SAELens resolved (and, for a transcoder, d_out, hook_name_out and whether it
has W_skip):

    /tmp/saeenv/bin/python scripts/make-saelens-fixture.py check-loupe DIR [DIR...]

The loupe half of the fixture (tests/fixtures/saelens/loupe-written/{relu,topk,jumprelu}) was
made with

    cargo run --release -p loupe-sae --example write-saelens-fixture
    /tmp/saeenv/bin/python scripts/make-saelens-fixture.py check-loupe \
        tests/fixtures/saelens/loupe-written/{relu,topk,jumprelu}

and SAELens resolved them as StandardSAE, TopKSAE (k = 5) and JumpReLUSAE. The same example later
wrote loupe-written/matryoshka (a Matryoshka BatchTopK SAE as loupe saves one: a JumpReLU with
one threshold for every latent, trained architecture "matryoshka"), checked the same way with the
same versions (sae-lens 6.54.12 and eai-sparsify 1.3.3 in one environment, torch 2.15.0 from the
bench's), which SAELens resolved as JumpReLUSAE.
"""

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file, save_file

import sae_lens
from sae_lens import (
    SAE,
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    SkipTranscoder,
    SkipTranscoderConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    Transcoder,
    TranscoderConfig,
)
from sae_lens.loading import pretrained_sae_loaders
from sae_lens.saes.sae import SAEMetadata

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "saelens"
D_IN, D_SAE, K = 16, 48, 4


def metadata() -> SAEMetadata:
    return SAEMetadata(model_name="smollm2", hook_name="blocks.15.hook_resid_post")


def randomize(sae, gen: torch.Generator) -> None:
    """Random, non-trivial values for the parameters every architecture shares."""

    def randn(*shape, scale):
        return torch.randn(*shape, generator=gen) * scale

    with torch.no_grad():
        sae.W_enc.copy_(randn(D_IN, D_SAE, scale=D_IN**-0.5))
        # Row norms spread around 0.6..1.6: not unit norm.
        rows = randn(D_SAE, D_IN, scale=1.0)
        rows /= rows.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(rows * (0.6 + torch.rand(D_SAE, 1, generator=gen)))
        sae.b_enc.copy_(randn(D_SAE, scale=0.3))
        sae.b_dec.copy_(randn(D_IN, scale=0.5))


def outputs(sae, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        acts = sae.encode(x)
        return {
            "feature_acts": acts.float().contiguous(),
            "reconstruction": sae.decode(acts).float().contiguous(),
            "forward": sae(x).float().contiguous(),
        }


def write_reference(d: Path, x: torch.Tensor, in_memory=None) -> dict[str, torch.Tensor]:
    """Load `d` back with SAELens's loader and record its outputs on `x`."""
    sae = SAE.load_from_disk(d)
    out = outputs(sae, x)
    if in_memory is not None:
        for name, t in outputs(in_memory, x).items():
            assert torch.allclose(out[name], t, atol=1e-6), f"{d.name}: {name} differs"
    save_file({"input": x.contiguous(), **out}, d / "reference.safetensors")
    active = (out["feature_acts"] > 0).sum(dim=1).tolist()
    print(f"{d.name}: {type(sae).__name__} ({sae.cfg.architecture()}), active per row {active}")
    return out


def make() -> None:
    gen = torch.Generator().manual_seed(20240515)
    # Inputs around the scale of b_dec so that enough latents fire.
    x = torch.randn(8, D_IN, generator=gen) * 1.5

    sae = StandardSAE(StandardSAEConfig(
        d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=True, metadata=metadata()))
    randomize(sae, gen)
    sae.save_model(OUT / "standard")
    write_reference(OUT / "standard", x, sae)

    sae = TopKSAE(TopKSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, apply_b_dec_to_input=False, metadata=metadata()))
    randomize(sae, gen)
    sae.save_model(OUT / "topk")
    write_reference(OUT / "topk", x, sae)

    sae = JumpReLUSAE(JumpReLUSAEConfig(
        d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False, metadata=metadata()))
    randomize(sae, gen)
    with torch.no_grad():
        sae.threshold.copy_(0.2 + torch.rand(D_SAE, generator=gen))
    sae.save_model(OUT / "jumprelu")
    write_reference(OUT / "jumprelu", x, sae)

    # BatchTopK: a training SAE, saved for inference the way SAELens's runner does at the end of
    # training (save_inference_model -> architecture "jumprelu" with a uniform threshold).
    train = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, metadata=metadata()))
    randomize(train, gen)
    train.topk_threshold = torch.tensor(0.9, dtype=torch.double)
    train.save_inference_model(OUT / "batchtopk")
    ref = write_reference(OUT / "batchtopk", x)
    # The saved JumpReLU is the training SAE's rule applied per sample: a latent fires where its
    # decoder-norm-scaled pre-activation exceeds the batch threshold; decoder rows are unit norm.
    norm = train.W_dec.norm(dim=1)
    pre = ((x - train.b_dec) @ train.W_enc + train.b_enc) * norm
    acts = torch.relu(pre) * (pre > 0.9)
    assert torch.allclose(ref["feature_acts"], acts, atol=1e-5)
    assert torch.allclose(ref["reconstruction"], (acts / norm) @ train.W_dec + train.b_dec, atol=1e-5)
    saved = load_file(OUT / "batchtopk" / "sae_weights.safetensors")
    assert torch.allclose(saved["W_dec"].norm(dim=1), torch.ones(D_SAE), atol=1e-5)
    assert torch.all(saved["threshold"] == saved["threshold"][0])

    # Gemma Scope layout.
    d = OUT / "gemma-scope"
    d.mkdir(parents=True, exist_ok=True)
    w_enc = torch.randn(D_IN, D_SAE, generator=gen) * D_IN**-0.5
    rows = torch.randn(D_SAE, D_IN, generator=gen)
    w_dec = rows / rows.norm(dim=1, keepdim=True) * (0.6 + torch.rand(D_SAE, 1, generator=gen))
    b_enc = torch.randn(D_SAE, generator=gen) * 0.3
    b_dec = torch.randn(D_IN, generator=gen) * 0.5
    threshold = 0.2 + torch.rand(D_SAE, generator=gen)
    params = {"W_enc": w_enc, "W_dec": w_dec, "b_enc": b_enc, "b_dec": b_dec, "threshold": threshold}
    np.savez(d / "params.npz", **{k: v.numpy().astype(np.float32) for k, v in params.items()})
    sae = SAE.load_from_disk(d, converter=gemma_scope_disk_loader)
    out = outputs(sae, x)
    pre = x @ w_enc + b_enc
    acts = torch.relu(pre) * (pre > threshold)
    assert torch.allclose(out["feature_acts"], acts, atol=1e-6)
    assert torch.allclose(out["reconstruction"], acts @ w_dec + b_dec, atol=1e-6)
    save_file({"input": x.contiguous(), **out}, d / "reference.safetensors")
    active = (out["feature_acts"] > 0).sum(dim=1).tolist()
    print(f"gemma-scope: {type(sae).__name__} ({sae.cfg.architecture()}), "
          f"apply_b_dec_to_input={sae.cfg.apply_b_dec_to_input}, active per row {active}")

    # Everything loads back with plain safetensors / numpy.
    for sub in sorted(OUT.iterdir()):
        for f in sorted(sub.glob("*.safetensors")):
            assert all(v.dtype == np.float32 for v in load_numpy(f).values()), f
    with np.load(OUT / "gemma-scope" / "params.npz") as z:
        assert {k: z[k].shape for k in z} == {
            "W_enc": (D_IN, D_SAE), "W_dec": (D_SAE, D_IN), "b_enc": (D_SAE,),
            "b_dec": (D_IN,), "threshold": (D_SAE,)}


def make_transcoders() -> None:
    """transcoder/ and skip-transcoder/, from their own generator (independent of `make`'s)."""
    gen = torch.Generator().manual_seed(20250603)
    d_out = 16
    x = torch.randn(8, D_IN, generator=gen) * 1.5

    def randn(*shape, scale):
        return torch.randn(*shape, generator=gen) * scale

    def meta() -> SAEMetadata:
        return SAEMetadata(model_name="smollm2", hook_name="blocks.3.ln2.hook_normalized",
                           hook_name_out="blocks.3.hook_mlp_out")

    for name, cls, cfg_cls in [("transcoder", Transcoder, TranscoderConfig),
                               ("skip-transcoder", SkipTranscoder, SkipTranscoderConfig)]:
        sae = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, d_out=d_out, apply_b_dec_to_input=False,
                          metadata=meta()))
        with torch.no_grad():
            sae.W_enc.copy_(randn(D_IN, D_SAE, scale=D_IN**-0.5))
            rows = randn(D_SAE, d_out, scale=1.0)
            rows /= rows.norm(dim=1, keepdim=True)
            sae.W_dec.copy_(rows * (0.6 + torch.rand(D_SAE, 1, generator=gen)))
            sae.b_enc.copy_(randn(D_SAE, scale=0.3))
            sae.b_dec.copy_(randn(d_out, scale=0.5))
            if hasattr(sae, "W_skip"):
                sae.W_skip.copy_(randn(d_out, D_IN, scale=0.3))
        d = OUT / name
        sae.save_model(d)
        out = write_reference(d, x, sae)
        loaded = SAE.load_from_disk(d)
        assert type(loaded) is cls, type(loaded)
        w = load_file(d / "sae_weights.safetensors")
        expect_shapes = {"W_enc": (D_IN, D_SAE), "W_dec": (D_SAE, d_out), "b_enc": (D_SAE,),
                         "b_dec": (d_out,)}
        if cls is SkipTranscoder:
            expect_shapes["W_skip"] = (d_out, D_IN)
        assert {k: tuple(v.shape) for k, v in w.items()} == expect_shapes, w.keys()
        # SAELens's transcoder rule: no b_dec subtracted from the input; the skip term is only
        # in forward, not in decode.
        acts = torch.relu(x @ w["W_enc"] + w["b_enc"])
        assert torch.allclose(out["feature_acts"], acts, atol=1e-6)
        recon = acts @ w["W_dec"] + w["b_dec"]
        assert torch.allclose(out["reconstruction"], recon, atol=1e-5)
        skip = x @ w["W_skip"].T if "W_skip" in w else torch.zeros_like(recon)
        assert torch.allclose(out["forward"], recon + skip, atol=1e-5)
        assert "W_skip" not in w or skip.abs().max() > 0.1
        assert (out["feature_acts"] > 0).sum(dim=1).min() > 0
        assert loaded.cfg.metadata.hook_name_out == "blocks.3.hook_mlp_out"


def gemma_scope_disk_loader(path, device="cpu", cfg_overrides=None):
    """SAELens's Gemma Scope loader, reading DIR/params.npz instead of downloading it.

    The repo id and folder name are those of a real Gemma Scope release (the loader derives the
    architecture, hook name and apply_b_dec_to_input = false from them); d_in and d_sae are
    overridden to the fixture's sizes.
    """
    real = pretrained_sae_loaders.hf_hub_download
    pretrained_sae_loaders.hf_hub_download = lambda **kw: str(Path(path) / kw["filename"])
    try:
        cfg, state, _ = pretrained_sae_loaders.gemma_2_sae_huggingface_loader(
            repo_id="google/gemma-scope-2b-pt-res",
            folder_name="layer_15/width_16k/average_l0_50",
            device=device,
            cfg_overrides={"d_in": D_IN, "d_sae": D_SAE, **(cfg_overrides or {})},
        )
    finally:
        pretrained_sae_loaders.hf_hub_download = real
    return cfg, state


def check_loupe(dirs: list[str]) -> None:
    for name in dirs:
        d = Path(name)
        sae = SAE.load_from_disk(d)
        x = load_file(d / "reference-input.safetensors")["input"].float()
        out = outputs(sae, x)
        save_file(out, d / "saelens-outputs.safetensors")
        cfg = sae.cfg
        extra = f", k={cfg.k}, rescale_acts_by_decoder_norm={cfg.rescale_acts_by_decoder_norm}" \
            if hasattr(cfg, "k") else ""
        if isinstance(sae, Transcoder):
            extra += (f", d_out={cfg.d_out}, hook_name={cfg.metadata.hook_name!r}, "
                      f"hook_name_out={cfg.metadata.hook_name_out!r}, "
                      f"W_skip={isinstance(sae, SkipTranscoder)}")
        print(f"{d}: SAELens resolved {type(sae).__name__} (architecture {cfg.architecture()!r}, "
              f"d_in={cfg.d_in}, d_sae={cfg.d_sae}, apply_b_dec_to_input={cfg.apply_b_dec_to_input}, "
              f"normalize_activations={cfg.normalize_activations!r}{extra}); "
              f"wrote {d / 'saelens-outputs.safetensors'}")


if __name__ == "__main__":
    # SAELens builds the BatchTopK inference cfg.json from a set of field names, so its key order
    # follows string hashing: pin the hash seed to make the files byte-reproducible.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_grad_enabled(False)
    print(f"sae-lens {sae_lens.__version__}, torch {torch.__version__}")
    args = sys.argv[1:]
    if not args or args[0] == "make":
        make()
        make_transcoders()
    elif args[0] == "make-transcoders":
        make_transcoders()
    elif args[0] == "check-loupe" and len(args) > 1:
        check_loupe(args[1:])
    else:
        sys.exit("usage: make-saelens-fixture.py [make | make-transcoders | check-loupe DIR...]")

//! SAELens's on-disk format, both ways, against a fixture made by SAELens 6.54.12 itself
//! (`scripts/make-saelens-fixture.py`):
//! - loupe loads SAEs that SAELens wrote (standard, topk, jumprelu, a BatchTopK saved for
//!   inference, and a Gemma Scope `params.npz`) and transcoders (`transcoder`, `skip_transcoder`)
//!   and computes SAELens's encode, decode and forward;
//! - SAELens loaded the SAEs loupe wrote (`loupe-written/`, made by
//!   `cargo run -p loupe-sae --example write-saelens-fixture`) and computed the same outputs as
//!   loupe; and loupe still writes those files byte for byte.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use loupe_sae::testing::{fixture_input, fixture_sae, fixture_transcoder};
use loupe_sae::{saelens, Activation};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/saelens")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn load_reference(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn loupe_computes_what_saelens_computes_on_saelens_files() {
    for (dir, expected) in [
        ("standard", "standard"),
        ("topk", "topk"),
        ("jumprelu", "jumprelu"),
        ("batchtopk", "jumprelu"),
        ("gemma-scope", "jumprelu"),
    ] {
        let path = fixtures().join(dir);
        let sae = saelens::load(&path).unwrap();
        assert_eq!(sae.activation.saelens_name(), expected, "{dir}");
        let reference = load_reference(&path.join("reference.safetensors"));
        let x = &reference["input"];
        let acts = sae.encode(x).unwrap();
        let active = acts.gt(0.0).unwrap().to_dtype(candle_core::DType::F32).unwrap();
        assert!(
            active.sum_all().unwrap().to_scalar::<f32>().unwrap() > 8.0,
            "{dir}: latents fire"
        );
        assert!(
            max_diff(&acts, &reference["feature_acts"]) < 1e-5,
            "{dir}: encode"
        );
        let decoded = sae.decode(&reference["feature_acts"]).unwrap();
        assert!(
            max_diff(&decoded, &reference["reconstruction"]) < 1e-5,
            "{dir}: decode"
        );
        assert!(
            max_diff(&sae.forward(x).unwrap(), &reference["forward"]) < 1e-5,
            "{dir}: forward"
        );
        if dir != "gemma-scope" {
            assert_eq!(sae.metadata.hook_name, "blocks.15.hook_resid_post");
            assert_eq!(sae.metadata.model_name, "smollm2");
        }
    }
}

/// SAELens's transcoders: encode reads the input hook (no b_dec subtracted), decode writes the
/// output hook, and a skip transcoder's forward adds `x · W_skipᵀ` (its `decode` does not).
#[test]
fn loupe_computes_what_saelens_computes_on_saelens_transcoders() {
    for (dir, skip) in [("transcoder", false), ("skip-transcoder", true)] {
        let path = fixtures().join(dir);
        let sae = saelens::load(&path).unwrap();
        assert!(sae.is_transcoder() && !sae.apply_b_dec_to_input, "{dir}");
        assert_eq!(sae.w_skip.is_some(), skip, "{dir}");
        assert_eq!(sae.metadata.hook_name, "blocks.3.ln2.hook_normalized");
        assert_eq!(sae.output_hook_name(), "blocks.3.hook_mlp_out");
        let reference = load_reference(&path.join("reference.safetensors"));
        let x = &reference["input"];
        let acts = sae.encode(x).unwrap();
        assert!(
            max_diff(&acts, &reference["feature_acts"]) < 1e-5,
            "{dir}: encode"
        );
        let decoded = sae.decode(&acts).unwrap();
        assert!(
            max_diff(&decoded, &reference["reconstruction"]) < 1e-5,
            "{dir}: decode"
        );
        let forward = sae.forward(x).unwrap();
        assert!(max_diff(&forward, &reference["forward"]) < 1e-5, "{dir}: forward");
        // The skip term matters in the fixture: forward is not decode.
        assert_eq!(max_diff(&forward, &decoded) > 1e-2, skip, "{dir}");
    }
}

#[test]
fn saelens_computes_what_loupe_computes_on_loupe_files() {
    let saes = ["relu", "topk", "jumprelu", "matryoshka"]
        .iter()
        .enumerate()
        .map(|(i, kind)| (*kind, fixture_sae(kind, 100 + i as u64).unwrap(), 200 + i as u64));
    // The transcoders SAELens has classes for, as `examples/write-saelens-fixture.rs` writes them.
    let transcoders = [
        ("skip-transcoder", "relu", true),
        ("jumprelu-transcoder", "jumprelu", false),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, kind, skip))| {
        (
            name,
            fixture_transcoder(kind, skip, 110 + i as u64).unwrap(),
            210 + i as u64,
        )
    });
    for (kind, sae, input_seed) in saes.chain(transcoders) {
        let dir = fixtures().join("loupe-written").join(kind);
        // The committed files are what loupe writes today.
        let fresh = tempfile::tempdir().unwrap();
        saelens::save(&sae, fresh.path()).unwrap();
        for file in [saelens::CFG_FILE, saelens::WEIGHTS_FILE] {
            let committed = std::fs::read(dir.join(file)).unwrap();
            let written = std::fs::read(fresh.path().join(file)).unwrap();
            assert!(
                committed == written,
                "{kind}/{file} differs from what loupe writes now"
            );
        }
        let input = fixture_input(input_seed).unwrap();
        let stored_input = &load_reference(&dir.join("reference-input.safetensors"))["input"];
        assert_eq!(max_diff(&input, stored_input), 0.0);

        let saelens_outputs = load_reference(&dir.join("saelens-outputs.safetensors"));
        let sae = saelens::load(&dir).unwrap();
        assert_eq!(sae.metadata.hook_name_out.is_some(), kind.contains("transcoder"));
        let acts = sae.encode(&input).unwrap();
        assert!(
            max_diff(&acts, &saelens_outputs["feature_acts"]) < 1e-5,
            "{kind}: encode"
        );
        let decoded = sae.decode(&acts).unwrap();
        assert!(
            max_diff(&decoded, &saelens_outputs["reconstruction"]) < 1e-5,
            "{kind}: decode"
        );
        assert!(
            max_diff(&sae.forward(&input).unwrap(), &saelens_outputs["forward"]) < 1e-5,
            "{kind}: forward"
        );
    }
}

#[test]
fn training_normalisation_is_folded_into_the_saved_weights() {
    // The fixture SAEs were made from parameters trained on activations × 1.7: on raw inputs
    // they must give the latents the parameters give on scaled inputs.
    let sae = fixture_sae("relu", 100).unwrap();
    let x = fixture_input(1).unwrap();
    let scaled = (&x * 1.7).unwrap();
    let w_enc_train = (&sae.w_enc / 1.7).unwrap();
    let pre_train = scaled
        .matmul(&w_enc_train)
        .unwrap()
        .broadcast_add(&sae.b_enc)
        .unwrap();
    assert!(max_diff(&sae.encode(&x).unwrap(), &pre_train.relu().unwrap()) < 1e-5);
    assert!(matches!(sae.activation, Activation::Relu));
}

#[test]
fn unsupported_and_broken_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in [saelens::CFG_FILE, saelens::WEIGHTS_FILE] {
            std::fs::copy(fixtures().join("topk").join(f), to.join(f)).unwrap();
        }
    };
    let gated = dir.path().join("gated");
    copy(&gated);
    let cfg = std::fs::read_to_string(gated.join("cfg.json"))
        .unwrap()
        .replace("\"topk\"", "\"gated\"");
    std::fs::write(gated.join("cfg.json"), cfg).unwrap();
    let e = saelens::load(&gated).unwrap_err().to_string();
    assert!(e.contains("cfg.json") && e.contains("gated"), "{e}");

    let wrong = dir.path().join("wrong-width");
    copy(&wrong);
    let cfg = std::fs::read_to_string(wrong.join("cfg.json"))
        .unwrap()
        .replace("\"d_in\": 16", "\"d_in\": 17");
    std::fs::write(wrong.join("cfg.json"), cfg).unwrap();
    let e = saelens::load(&wrong).unwrap_err().to_string();
    assert!(e.contains("W_enc") && e.contains("d_in 17"), "{e}");

    let e = saelens::load(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cfg.json"), "{e}");
}

//! sparsify's layout, against files sparsify itself wrote and read (see
//! scripts/make-sparsify-fixture.py for their provenance): loupe computes what sparsify computes
//! on sparsify's files (a TopK SAE and a TopK skip transcoder), sparsify computes what loupe
//! computes on loupe's, and what sparsify cannot run is refused by name.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use loupe_sae::testing::{fixture_input, fixture_sae, fixture_transcoder};
use loupe_sae::{saelens, sparsify, Activation};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sparsify")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn load_tensors(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn loupe_computes_what_sparsify_computes_on_sparsify_files() {
    let dir = fixtures().join("run/layers.3");
    // Through the general loader, as every command loads SAEs.
    let sae = saelens::load(&dir).unwrap();
    assert_eq!((sae.d_in, sae.d_sae), (16, 48));
    assert_eq!(sae.activation, Activation::TopK { k: 5 });
    assert_eq!(sae.metadata.hook_name, "blocks.3.hook_resid_post");
    let reference = load_tensors(&dir.join("reference.safetensors"));
    let x = &reference["input"];
    let acts = sae.encode(x).unwrap();
    assert!(max_diff(&acts, &reference["feature_acts"]) < 1e-5, "encode");
    assert!(
        max_diff(&sae.forward(x).unwrap(), &reference["forward"]) < 1e-5,
        "forward"
    );
}

/// A skip transcoder of the MLP of layer 3: it reads the MLP's input, no b_dec subtracted, and
/// adds the skip term.
#[test]
fn loupe_computes_what_sparsify_computes_on_a_sparsify_skip_transcoder() {
    let dir = fixtures().join("run/layers.3.mlp");
    let sae = saelens::load(&dir).unwrap();
    assert_eq!(sae.activation, Activation::TopK { k: 5 });
    assert_eq!(sae.metadata.hook_name, "blocks.3.ln2.hook_normalized");
    assert_eq!(sae.output_hook_name(), "blocks.3.hook_mlp_out");
    assert!(sae.w_skip.is_some() && !sae.apply_b_dec_to_input);
    let reference = load_tensors(&dir.join("reference.safetensors"));
    let x = &reference["input"];
    assert!(
        max_diff(&sae.encode(x).unwrap(), &reference["feature_acts"]) < 1e-5,
        "encode"
    );
    assert!(
        max_diff(&sae.forward(x).unwrap(), &reference["forward"]) < 1e-5,
        "forward"
    );
}

#[test]
fn sparsify_computes_what_loupe_computes_on_loupe_files() {
    for (name, sae, input_seed) in [
        ("layers.15", fixture_sae("topk", 300).unwrap(), 301),
        (
            "layers.3.mlp",
            fixture_transcoder("topk", true, 310).unwrap(),
            311,
        ),
    ] {
        sparsify_runs_loupe_file(name, &sae, input_seed);
    }
}

fn sparsify_runs_loupe_file(name: &str, sae: &loupe_sae::Sae, input_seed: u64) {
    let dir = fixtures().join("loupe-written").join(name);
    // The committed files are what loupe writes today.
    let fresh = tempfile::tempdir().unwrap();
    sparsify::save(sae, fresh.path()).unwrap();
    for file in [sparsify::CFG_FILE, sparsify::WEIGHTS_FILE] {
        let committed = std::fs::read(dir.join(file)).unwrap();
        assert!(
            committed == std::fs::read(fresh.path().join(file)).unwrap(),
            "{name}/{file} differs from what loupe writes now"
        );
    }
    let input = fixture_input(input_seed).unwrap();
    assert_eq!(
        max_diff(
            &input,
            &load_tensors(&dir.join("reference-input.safetensors"))["input"]
        ),
        0.0
    );
    let theirs = load_tensors(&dir.join("sparsify-outputs.safetensors"));
    assert!(
        max_diff(&sae.encode(&input).unwrap(), &theirs["feature_acts"]) < 1e-5,
        "encode"
    );
    assert!(
        max_diff(&sae.forward(&input).unwrap(), &theirs["forward"]) < 1e-5,
        "forward"
    );
    // And loupe reads back what it wrote, hooks included.
    let back = sparsify::load(&dir).unwrap();
    assert!(max_diff(&back.forward(&input).unwrap(), &theirs["forward"]) < 1e-5);
    assert_eq!(back.metadata.hook_name, sae.metadata.hook_name);
    assert_eq!(back.metadata.hook_name_out, sae.metadata.hook_name_out);
}

#[test]
fn what_sparsify_cannot_run_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // A transcoder that is not one MLP's has no sparsify module directory.
    let mut elsewhere = fixture_transcoder("topk", false, 1).unwrap();
    elsewhere.metadata.hook_name_out = Some("blocks.4.hook_mlp_out".into());
    let e = sparsify::save(&elsewhere, dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("one MLP") && e.contains("blocks.4.hook_mlp_out"),
        "{e}"
    );
    let e = sparsify::save(&fixture_sae("relu", 1).unwrap(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("TopK SAEs only") && e.contains("SAELens"), "{e}");
}

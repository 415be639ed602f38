//! sparsify's layout, against files sparsify itself wrote and read (see
//! scripts/make-sparsify-fixture.py for their provenance): loupe computes what sparsify computes
//! on sparsify's files, sparsify computes what loupe computes on loupe's, and what loupe cannot
//! run is refused by name.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use loupe_sae::testing::{fixture_input, fixture_sae};
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

#[test]
fn sparsify_computes_what_loupe_computes_on_loupe_files() {
    let dir = fixtures().join("loupe-written/layers.15");
    // The committed files are what loupe writes today.
    let fresh = tempfile::tempdir().unwrap();
    let sae = fixture_sae("topk", 300).unwrap();
    sparsify::save(&sae, fresh.path()).unwrap();
    for file in [sparsify::CFG_FILE, sparsify::WEIGHTS_FILE] {
        let committed = std::fs::read(dir.join(file)).unwrap();
        assert!(
            committed == std::fs::read(fresh.path().join(file)).unwrap(),
            "{file} differs from what loupe writes now"
        );
    }
    let input = fixture_input(301).unwrap();
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
    // And loupe reads back what it wrote.
    let back = sparsify::load(&dir).unwrap();
    assert!(max_diff(&back.forward(&input).unwrap(), &theirs["forward"]) < 1e-5);
}

#[test]
fn transcoders_and_other_saes_are_refused_by_name() {
    let e = saelens::load(&fixtures().join("run/layers.3.mlp"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cfg.json") && e.contains("transcode = true"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = sparsify::save(&fixture_sae("relu", 1).unwrap(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("TopK SAEs only") && e.contains("SAELens"), "{e}");
}

//! Each architecture, trained by the real trainer on activations built from known sparse
//! directions, recovers those directions: the mean over true directions of the best cosine
//! similarity with a decoder row is above 0.9.

use loupe_model::HookPoint;
use loupe_sae::testing::{mean_max_cosine, synthetic, write_store};
use loupe_sae::{saelens, train, NoObserver, TrainConfig};

const D: usize = 32;
const FEATURES: usize = 64;

fn recover(architecture: &str, extra: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(D, FEATURES, 32_768, 3.0, 7);
    let hook = HookPoint::ResidPost(2);
    write_store(&dir.path().join("store"), hook, D, &data.rows, 64, "synthetic").unwrap();
    let text = format!(
        "store = {:?}\nhook = \"{hook}\"\noutput = {:?}\narchitecture = \"{architecture}\"\n\
         expansion = 4\ntrain_tokens = 400_000\nbatch_size = 512\nlr = 3e-3\neval_every = 100\n\
         checkpoint_every = 1000\ndead_window_tokens = 50_000\n{extra}",
        dir.path().join("store"),
        dir.path().join("sae"),
    );
    let config = TrainConfig::from_toml(&text, "test", &[]).unwrap();
    let outcome = train(&config, &mut NoObserver).unwrap();
    let metrics = outcome.metrics.unwrap();
    let sae = saelens::load(&dir.path().join("sae")).unwrap();
    let dec = sae.w_dec.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mmcs = mean_max_cosine(&data.directions, &dec, D);
    eprintln!(
        "{architecture}: mean max cosine {mmcs:.3}, explained variance {:.3}, L0 {:.2}, dead {:.3}",
        metrics.explained_variance, metrics.l0, metrics.dead_fraction
    );
    mmcs
}

#[test]
fn relu_recovers_planted_directions() {
    assert!(recover("relu", "l1_coefficient = 3.0") > 0.9);
}

#[test]
fn topk_recovers_planted_directions() {
    assert!(recover("topk", "k = 4") > 0.9);
}

#[test]
fn batchtopk_recovers_planted_directions() {
    assert!(recover("batchtopk", "k = 4") > 0.9);
}

/// The first group is as large as the planted set: a smaller one has to reconstruct alone with
/// fewer latents than there are features, so its latents merge features (0.89 with 32).
#[test]
fn matryoshka_recovers_planted_directions() {
    assert!(recover("matryoshka", "k = 4\nmatryoshka_groups = [64, 64]") > 0.9);
}

#[test]
fn jumprelu_recovers_planted_directions() {
    assert!(recover("jumprelu", "target_l0 = 3.0") > 0.9);
}

/// Activations made elsewhere, saved as .npy and brought in by `loupe store import`, train as a
/// captured store does.
#[test]
fn imported_activations_train_like_captured_ones() {
    use candle_core::{Device, Tensor};
    use loupe_data::import::{import, ImportSpec};
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(D, FEATURES, 32_768, 3.0, 7);
    let rows = Tensor::from_slice(&data.rows, (data.rows.len() / D, D), &Device::Cpu).unwrap();
    rows.write_npy(dir.path().join("acts.npy")).unwrap();
    let hook = HookPoint::ResidPost(2);
    let spec = ImportSpec {
        activations: dir.path().join("acts.npy").to_str().unwrap().parse().unwrap(),
        token_ids: None,
        doc_ids: None,
        labels: Vec::new(),
        output: dir.path().join("store"),
        hook,
        model: "synthetic".into(),
        dtype: loupe_data::store::StoreDType::F32,
        context_length: 64,
        shard_contexts: 16,
    };
    import(&spec, &mut loupe_util::NoProgress).unwrap();
    let text = format!(
        "store = {:?}\nhook = \"{hook}\"\noutput = {:?}\narchitecture = \"topk\"\nk = 4\n\
         expansion = 4\ntrain_tokens = 400_000\nbatch_size = 512\nlr = 3e-3\neval_every = 100\n\
         checkpoint_every = 1000\ndead_window_tokens = 50_000\n",
        dir.path().join("store"),
        dir.path().join("sae"),
    );
    let config = TrainConfig::from_toml(&text, "test", &[]).unwrap();
    train(&config, &mut NoObserver).unwrap();
    let sae = saelens::load(&dir.path().join("sae")).unwrap();
    let dec = sae.w_dec.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(mean_max_cosine(&data.directions, &dec, D) > 0.9);
}

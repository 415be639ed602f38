//! Each architecture, trained by the real trainer on activations built from known sparse
//! directions, recovers those directions: the mean over true directions of the best cosine
//! similarity with a decoder row is above 0.9. A transcoder recovers the dictionary its targets
//! are made from, and a skip transcoder also the linear part of the map.

use loupe_model::HookPoint;
use loupe_sae::testing::{mean_max_cosine, synthetic, synthetic_pair, write_store};
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

/// Trains a TopK transcoder (with `extra` settings) from inputs to targets made from the same
/// codes through two dictionaries (and a linear map of the input, when `linear`), brought in as
/// .npy files by `loupe store import`; returns the mean max cosine of its decoder with the
/// target dictionary and its held-out FVU.
fn recover_transcoder(extra: &str, linear: bool) -> (f64, f64) {
    use candle_core::{Device, Tensor};
    use loupe_data::import::{import, ImportSpec};
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_pair(D, FEATURES, 32_768, 3.0, linear, 8);
    let (hook, target) = (HookPoint::Ln2Normalized(2), HookPoint::MlpOut(2));
    let npy = |name: &str, rows: &[f32]| {
        let path = dir.path().join(name);
        Tensor::from_slice(rows, (rows.len() / D, D), &Device::Cpu)
            .unwrap()
            .write_npy(&path)
            .unwrap();
        path.to_str().unwrap().parse().unwrap()
    };
    let spec = ImportSpec {
        activations: npy("inputs.npy", &data.input.rows),
        token_ids: None,
        doc_ids: None,
        labels: Vec::new(),
        output: dir.path().join("store"),
        hook,
        target: Some((target, npy("targets.npy", &data.target))),
        model: "synthetic".into(),
        dtype: loupe_data::store::StoreDType::F32,
        context_length: 64,
        shard_contexts: 16,
    };
    import(&spec, &mut loupe_util::NoProgress).unwrap();
    let text = format!(
        "store = {:?}\nhook = \"{hook}\"\ntarget_hook = \"{target}\"\noutput = {:?}\narchitecture = \"topk\"\n\
         k = 4\nexpansion = 4\ntrain_tokens = 400_000\nbatch_size = 512\nlr = 3e-3\neval_every = 100\n\
         checkpoint_every = 1000\ndead_window_tokens = 50_000\n{extra}",
        dir.path().join("store"),
        dir.path().join("sae"),
    );
    let config = TrainConfig::from_toml(&text, "test", &[]).unwrap();
    let metrics = train(&config, &mut NoObserver).unwrap().metrics.unwrap();
    let sae = saelens::load(&dir.path().join("sae")).unwrap();
    assert_eq!(
        sae.metadata.hook_name_out.as_deref(),
        Some("blocks.2.hook_mlp_out")
    );
    let dec = sae.w_dec.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mmcs = mean_max_cosine(&data.target_directions, &dec, D);
    eprintln!(
        "transcoder ({extra:?}, linear {linear}): mean max cosine {mmcs:.3}, FVU {:.3}, L0 {:.2}",
        metrics.fvu, metrics.l0
    );
    (mmcs, metrics.fvu)
}

#[test]
fn a_transcoder_recovers_the_dictionary_of_its_targets() {
    let (mmcs, fvu) = recover_transcoder("", false);
    // (FVU 0.16 here: rows with more than k = 4 of the planted features lose one.)
    assert!(mmcs > 0.9 && fvu < 0.25, "{mmcs} {fvu}");
}

/// With a linear part in the map that no sparse code carries (the input's dense noise, mapped),
/// the skip term takes it: the skip transcoder reconstructs far better than the plain one, and its
/// dictionary is still the target's.
#[test]
fn a_skip_transcoder_learns_the_linear_part_of_the_map() {
    let (_, plain_fvu) = recover_transcoder("", true);
    let (mmcs, skip_fvu) = recover_transcoder("skip_connection = true", true);
    assert!(skip_fvu < 0.6 * plain_fvu, "{skip_fvu} vs {plain_fvu}");
    assert!(mmcs > 0.9, "{mmcs}");
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
        target: None,
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

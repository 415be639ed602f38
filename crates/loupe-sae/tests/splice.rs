//! Splicing an SAE into a tiny random-weight model: an SAE that reconstructs exactly recovers
//! all of the loss with zero KL, an SAE that outputs zero is the zero ablation, several SAEs
//! measured at once score as each alone, and SAEs that belong to another store are refused.
//! A transcoder is spliced in place of the MLP, and measured against the MLP's output.

use candle_core::{Device, Tensor};
use loupe_data::capture::{capture, CaptureConfig};
use loupe_data::corpus::CorpusSpec;
use loupe_data::reader::{Split, Store};
use loupe_data::store::StoreDType;
use loupe_model::testing::write_tiny_hf_dir;
use loupe_model::{Batch, HookPoint, Hooks, Logits, Model, Positions};
use loupe_sae::eval::{
    check_sae_matches_store, reconstruction, reconstruction_each, spliced, spliced_each, stored_contexts,
};
use loupe_sae::{Activation, Sae, SaeMetadata};
use loupe_util::NoProgress;

const HOOK: HookPoint = HookPoint::ResidPost(1);
const D: usize = 32;

fn setup() -> (tempfile::TempDir, Model, Store) {
    setup_with(vec![HOOK])
}

/// The tiny model and a store of `hooks`.
fn setup_with(hooks: Vec<HookPoint>) -> (tempfile::TempDir, Model, Store) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(&dir.path().join("model"), 3).unwrap();
    let model = Model::load(dir.path().join("model").to_str().unwrap(), &Device::Cpu).unwrap();
    let jsonl: String = (0..30)
        .map(|i| {
            let text = (0..20)
                .map(|w| format!("d{i}w{}", w % 7))
                .collect::<Vec<_>>()
                .join(" ");
            serde_json::json!({ "text": text }).to_string() + "\n"
        })
        .collect();
    std::fs::write(dir.path().join("corpus.jsonl"), jsonl).unwrap();
    let config = CaptureConfig {
        model: "tiny".into(),
        hooks,
        output: dir.path().join("store").to_str().unwrap().into(),
        context_length: 32,
        batch_size: 4,
        max_tokens: None,
        dtype: StoreDType::F32,
        shard_contexts: 8,
        include_separators: false,
        separator: None,
        corpus: vec![CorpusSpec {
            path: dir.path().join("corpus.jsonl").to_str().unwrap().into(),
            text_field: "text".into(),
            labels: vec![],
            spans: None,
            only: Default::default(),
        }],
    };
    capture(&model, &config, &mut NoProgress).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, model, store)
}

/// relu(x) − relu(−x) = x: an SAE with 2·d latents that reconstructs every input exactly.
fn identity_sae(scale_decoder: f64) -> Sae {
    let eye = Tensor::eye(D, candle_core::DType::F32, &Device::Cpu).unwrap();
    let w_enc = Tensor::cat(&[&eye, &eye.neg().unwrap()], 1).unwrap();
    let w_dec = (w_enc.t().unwrap().contiguous().unwrap() * scale_decoder).unwrap();
    Sae {
        activation: Activation::Relu,
        d_in: D,
        d_sae: 2 * D,
        w_enc,
        b_enc: Tensor::zeros(2 * D, candle_core::DType::F32, &Device::Cpu).unwrap(),
        w_dec,
        b_dec: Tensor::zeros(D, candle_core::DType::F32, &Device::Cpu).unwrap(),
        w_skip: None,
        apply_b_dec_to_input: false,
        metadata: SaeMetadata {
            hook_name: HOOK.to_string(),
            ..Default::default()
        },
    }
}

#[test]
fn exact_and_zero_saes_bound_the_spliced_metrics() {
    let (_dir, model, store) = setup();
    let split = Split::HeldOut {
        held_out: 0.3,
        seed: 0,
    };
    let contexts = stored_contexts(&store, HOOK, split, 6).unwrap();
    assert!(contexts.len() >= 3);
    // Rebuilt contexts start with the separator the store left out.
    assert!(contexts
        .iter()
        .all(|c| c.tokens[0] == store.manifest.separator_token && !c.positions.contains(&0)));

    let exact = spliced(&model, &identity_sae(1.0), HOOK, &contexts, 4, &mut NoProgress).unwrap();
    assert!((exact.ce_sae - exact.ce_clean).abs() < 1e-4, "{exact:?}");
    assert!((exact.ce_loss_recovered.unwrap() - 1.0).abs() < 1e-3, "{exact:?}");
    assert!(exact.kl_sae.abs() < 1e-4, "{exact:?}");
    // (A random model predicts no better than chance, so ablation need not raise its CE.)
    assert!(exact.kl_zero_ablation > 1e-3, "{exact:?}");

    let zero = spliced(&model, &identity_sae(0.0), HOOK, &contexts, 4, &mut NoProgress).unwrap();
    assert!((zero.ce_sae - zero.ce_zero_ablation).abs() < 1e-4, "{zero:?}");
    assert!(zero.ce_loss_recovered.unwrap().abs() < 1e-3, "{zero:?}");
    // Same numbers batched differently.
    let one_by_one = spliced(&model, &identity_sae(0.0), HOOK, &contexts, 1, &mut NoProgress).unwrap();
    assert!((one_by_one.ce_clean - zero.ce_clean).abs() < 1e-4);
}

/// A sweep measures its runs together (one read of the held-out split; the clean and ablated
/// forward passes once): each SAE's figures are exactly those it gets measured alone.
#[test]
fn several_saes_measured_at_once_score_as_each_alone() {
    let (_dir, model, store) = setup();
    let split = Split::HeldOut {
        held_out: 0.3,
        seed: 0,
    };
    let contexts = stored_contexts(&store, HOOK, split, 5).unwrap();
    let saes = [identity_sae(1.0), identity_sae(0.0), identity_sae(0.5)];
    let refs: Vec<&Sae> = saes.iter().collect();
    let together = spliced_each(&model, &refs, HOOK, &contexts, 2, &mut NoProgress).unwrap();
    let alone: Vec<_> = saes
        .iter()
        .map(|sae| spliced(&model, sae, HOOK, &contexts, 2, &mut NoProgress).unwrap())
        .collect();
    assert_eq!(together, alone);
    assert!(together[2].kl_sae > together[0].kl_sae + 1e-4, "{together:?}");

    let together = reconstruction_each(&refs, &store, HOOK, split, 100, 0.1).unwrap();
    let alone: Vec<_> = saes
        .iter()
        .map(|sae| reconstruction(sae, &store, HOOK, split, 100, 0.1).unwrap())
        .collect();
    // Compared as text: the zero SAE's reconstruction bias is NaN, which equals nothing.
    assert_eq!(format!("{together:?}"), format!("{alone:?}"));
    assert_eq!(together[0].tokens, 100);
    assert!(together[0].fvu < 1e-6 && together[1].fvu > 0.5, "{together:?}");
}

#[test]
fn saes_of_another_width_hook_or_model_are_refused() {
    let (_dir, _model, store) = setup();
    let sae = identity_sae(1.0);
    check_sae_matches_store(&sae, "sae", &store, HOOK).unwrap();

    let e = check_sae_matches_store(&sae, "sae", &store, HookPoint::ResidPost(2))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds no activations for blocks.2.hook_resid_post"),
        "{e}"
    );

    let mut narrow = sae.clone();
    narrow.d_in = 16;
    let e = check_sae_matches_store(&narrow, "sae", &store, HOOK)
        .unwrap_err()
        .to_string();
    assert!(e.contains("d_in = 16") && e.contains("width 32"), "{e}");

    let mut other_hook = sae.clone();
    other_hook.metadata.hook_name = "blocks.0.hook_resid_post".into();
    let e = check_sae_matches_store(&other_hook, "sae", &store, HOOK)
        .unwrap_err()
        .to_string();
    assert!(e.contains("trained on blocks.0.hook_resid_post"), "{e}");

    let mut other_model = sae.clone();
    other_model.metadata.model_sha256 = Some("0000".into());
    let e = check_sae_matches_store(&other_model, "sae", &store, HOOK)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another model file"), "{e}");
}

const MLP_IN: HookPoint = HookPoint::Ln2Normalized(1);
const MLP_OUT: HookPoint = HookPoint::MlpOut(1);

/// A ReLU transcoder of the MLP of layer 1 whose dictionary writes nothing (b_dec 0): its output
/// is its skip term, `x · W_skipᵀ` with `W_skip = skip · I`, or zero without one.
fn skip_only_transcoder(skip: Option<f64>) -> Sae {
    let zeros = |shape: &[usize]| Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap();
    let eye = Tensor::eye(D, candle_core::DType::F32, &Device::Cpu).unwrap();
    Sae {
        activation: Activation::Relu,
        d_in: D,
        d_sae: 4,
        w_enc: zeros(&[D, 4]),
        b_enc: zeros(&[4]),
        w_dec: zeros(&[4, D]),
        b_dec: zeros(&[D]),
        w_skip: skip.map(|s| (eye * s).unwrap()),
        apply_b_dec_to_input: false,
        metadata: SaeMetadata {
            hook_name: MLP_IN.to_string(),
            hook_name_out: Some(MLP_OUT.to_string()),
            ..Default::default()
        },
    }
}

/// Mean next-token cross-entropy over the stored positions of `contexts` when each stored
/// position's MLP output is replaced by that position's MLP input (taken from a clean pass):
/// what splicing the transcoder `skip_only_transcoder(Some(1.0))` must give, computed without it.
fn ce_with_mlp_out_replaced_by_its_input(model: &Model, contexts: &[loupe_sae::eval::StoredContext]) -> f64 {
    let (mut ce, mut n) = (0.0f64, 0usize);
    for c in contexts {
        let batch =
            Batch::left_padded(std::slice::from_ref(&c.tokens), model.pad_id(), model.device()).unwrap();
        let mut clean = Hooks::new().capture(MLP_IN);
        model.forward(&batch, &mut clean, Logits::All).unwrap();
        let mlp_in = clean.captured(MLP_IN).unwrap().get(0).unwrap();
        let mut hooks = Hooks::new();
        for &p in &c.positions {
            hooks = hooks.replace(MLP_OUT, Positions::Only(vec![p]), mlp_in.get(p).unwrap());
        }
        let logits = model
            .forward(&batch, &mut hooks, Logits::All)
            .unwrap()
            .get(0)
            .unwrap();
        let lse = logits.exp().unwrap().sum_keepdim(1).unwrap().log().unwrap();
        let log_p = logits.broadcast_sub(&lse).unwrap();
        for &p in c.positions.iter().filter(|&&p| p + 1 < c.tokens.len()) {
            let next = c.tokens[p + 1] as usize;
            ce -= log_p
                .get(p)
                .unwrap()
                .get(next)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            n += 1;
        }
    }
    ce / n as f64
}

#[test]
fn a_transcoder_is_spliced_in_place_of_the_mlp_and_measured_against_its_output() {
    let (_dir, model, store) = setup_with(vec![MLP_IN, MLP_OUT]);
    let split = Split::HeldOut {
        held_out: 0.3,
        seed: 0,
    };
    let contexts = stored_contexts(&store, MLP_IN, split, 4).unwrap();

    // Writing nothing is the MLP zero-ablated.
    let zero = spliced(
        &model,
        &skip_only_transcoder(None),
        MLP_IN,
        &contexts,
        4,
        &mut NoProgress,
    )
    .unwrap();
    assert!((zero.ce_sae - zero.ce_zero_ablation).abs() < 1e-4, "{zero:?}");
    assert!(zero.kl_zero_ablation > 1e-4, "{zero:?}");
    // Writing the MLP's input: the input is taken as the pass goes by, and replaces the output.
    let identity = skip_only_transcoder(Some(1.0));
    let through = spliced(&model, &identity, MLP_IN, &contexts, 4, &mut NoProgress).unwrap();
    let expected = ce_with_mlp_out_replaced_by_its_input(&model, &contexts);
    assert!(
        (through.ce_sae - expected).abs() < 1e-4,
        "{} vs {expected}",
        through.ce_sae
    );
    assert!(
        (through.ce_sae - through.ce_zero_ablation).abs() > 1e-3,
        "{through:?}"
    );

    // Reconstruction is measured against the MLP's output, row by row the same tokens: the
    // identity transcoder's squared error is Σ‖input − output‖², read from the store directly.
    let metrics = reconstruction(&identity, &store, MLP_IN, split, usize::MAX, 0.1).unwrap();
    let (mut squared_error, mut rows) = (0.0f64, 0u64);
    for shard in 0..store.manifest.shards.len() {
        let (input, output) = (
            store.read_shard(shard, MLP_IN).unwrap(),
            store.read_shard(shard, MLP_OUT).unwrap(),
        );
        let (x, y) = (
            input.activations.to_vec2::<f32>().unwrap(),
            output.activations.to_vec2::<f32>().unwrap(),
        );
        for (r, &doc) in input.fields.doc_ids.iter().enumerate() {
            if split.contains(doc) {
                squared_error += x[r]
                    .iter()
                    .zip(&y[r])
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>();
                rows += 1;
            }
        }
    }
    assert_eq!(metrics.tokens, rows);
    let mse = squared_error / (rows as f64 * D as f64);
    assert!(
        (metrics.mse - mse).abs() < 1e-6 * mse.max(1.0),
        "{} vs {mse}",
        metrics.mse
    );
}

#[test]
fn a_transcoder_whose_output_hook_the_store_lacks_is_refused() {
    let (_dir, _model, store) = setup_with(vec![MLP_IN]);
    let e = check_sae_matches_store(&skip_only_transcoder(None), "tc", &store, MLP_IN)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blocks.1.hook_mlp_out") && e.contains("capture"),
        "{e}"
    );
}

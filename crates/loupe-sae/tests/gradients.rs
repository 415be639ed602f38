//! Every architecture's analytic gradients against central finite differences of its own loss,
//! on tiny sizes.
//!
//! Transcoders (a target other than the input) and skip transcoders (a linear skip term) go
//! through the same steps, and are checked the same way.
//!
//! JumpReLU's thresholds have no true gradient (the loss is a step function of them); what the
//! straight-through estimator computes is the change of the loss as a threshold moves across a
//! window of width ε, divided by ε: a finite difference of width ε. That is what those entries
//! are checked against.

use loupe_sae::arch::{self, StepContext};
use loupe_sae::{Params, TrainConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const D_IN: usize = 6;
const D_SAE: usize = 12;
const ROWS: usize = 16;

fn config(architecture: &str, extra: &str) -> TrainConfig {
    let text = format!(
        "store = \"unused\"\nhook = \"blocks.0.hook_resid_post\"\noutput = \"unused\"\narchitecture = \"{architecture}\"\n\
         train_tokens = 100\nbatch_size = 16\nd_sae = {D_SAE}\n{extra}"
    );
    TrainConfig::from_toml(&text, "test", &[]).unwrap()
}

fn random_params(rng: &mut StdRng, thresholds: bool) -> Params {
    let mut p = Params::zeros(D_IN, D_SAE, thresholds);
    for (_, values) in p.fields_mut() {
        values
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0..1.0f32));
    }
    if let Some(t) = &mut p.log_threshold {
        t.iter_mut().for_each(|v| *v = rng.random_range(0.2..0.6f32).ln());
    }
    p
}

/// A batch: inputs, and the target to reconstruct (the inputs themselves for an SAE).
struct Data {
    x: Vec<f32>,
    target: Vec<f32>,
}

fn random_rows(rng: &mut StdRng, rows: usize) -> Vec<f32> {
    (0..rows * D_IN).map(|_| rng.random_range(-1.5..1.5f32)).collect()
}

fn random_x(rng: &mut StdRng) -> Data {
    let x = random_rows(rng, ROWS);
    Data { target: x.clone(), x }
}

/// A transcoder's batch: inputs and an unrelated target.
fn random_pair(rng: &mut StdRng) -> Data {
    Data {
        x: random_rows(rng, ROWS),
        target: random_rows(rng, ROWS),
    }
}

/// Runs the architecture's step and returns the named loss terms and the gradients.
fn losses(
    config: &TrainConfig,
    params: &Params,
    x: &Data,
    dead: &[u32],
) -> (Vec<(&'static str, f64)>, Params) {
    let mut arch = arch::build(config, D_IN).unwrap();
    let ctx = StepContext {
        sparsity_scale: 1.0,
        dead,
    };
    let out = arch::step(arch.as_mut(), params, &x.x, &x.target, &ctx).unwrap();
    (out.losses.clone(), out.grads)
}

fn total(config: &TrainConfig, params: &Params, x: &Data, dead: &[u32]) -> f64 {
    losses(config, params, x, dead).0.iter().map(|(_, v)| v).sum()
}

/// The loss and which latents fired on each token: where a perturbation changes the latter, the
/// loss is not differentiable (a ReLU kink, a top-k swap, a threshold crossing).
fn total_and_pattern(config: &TrainConfig, params: &Params, x: &Data, dead: &[u32]) -> (f64, Vec<u32>) {
    let mut arch = arch::build(config, D_IN).unwrap();
    let ctx = StepContext {
        sparsity_scale: 1.0,
        dead,
    };
    let out = arch::step(arch.as_mut(), params, &x.x, &x.target, &ctx).unwrap();
    (out.loss(), out.fired)
}

/// Compares analytic and central-difference gradients for every entry of the named tensors
/// (restricted to `rows` of the `[d_sae, d_in]` matrices when given). Returns the worst relative
/// error, measured against the gradient vector's size.
fn check(
    config: &TrainConfig,
    params: &Params,
    x: &Data,
    dead: &[u32],
    fields: &[&str],
    rows: Option<&[u32]>,
) -> f64 {
    let (_, grads) = losses(config, params, x, dead);
    let h = 1e-3f32;
    let mut worst: f64 = 0.0;
    for &field in fields {
        let analytic = grads
            .fields()
            .into_iter()
            .find(|(n, _)| *n == field)
            .unwrap()
            .1
            .clone();
        let len = analytic.len();
        let mut numeric = vec![0.0; len];
        let mut compared = vec![false; len];
        let mut skipped = 0;
        for i in 0..len {
            let row = (i / D_IN) as u32;
            if matches!(field, "enc" | "dec") && rows.is_some_and(|r| !r.contains(&row)) {
                continue;
            }
            let mut plus = params.clone();
            let mut minus = params.clone();
            plus.fields_mut()
                .into_iter()
                .find(|(n, _)| *n == field)
                .unwrap()
                .1[i] += h;
            minus
                .fields_mut()
                .into_iter()
                .find(|(n, _)| *n == field)
                .unwrap()
                .1[i] -= h;
            let (up, up_pattern) = total_and_pattern(config, &plus, x, dead);
            let (down, down_pattern) = total_and_pattern(config, &minus, x, dead);
            if up_pattern != down_pattern {
                skipped += 1;
                continue;
            }
            numeric[i] = (up - down) / (2.0 * h as f64);
            compared[i] = true;
        }
        assert!(
            skipped * 10 <= len,
            "{field}: {skipped} of {len} entries sit on a kink"
        );
        let scale = analytic.iter().map(|&g| (g as f64).abs()).fold(1e-3, f64::max);
        for i in (0..len).filter(|&i| compared[i]) {
            let err = (numeric[i] - analytic[i] as f64).abs() / scale;
            assert!(
                err < 2e-2,
                "{}: d/d{field}[{i}] analytic {} vs finite difference {}",
                config.architecture,
                analytic[i],
                numeric[i]
            );
            worst = worst.max(err);
        }
    }
    worst
}

const ALL: &[&str] = &["enc", "b_enc", "dec", "b_dec"];

#[test]
fn relu_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(1);
    let (params, x) = (random_params(&mut rng, false), random_x(&mut rng));
    for apply in [false, true] {
        let c = config(
            "relu",
            &format!("l1_coefficient = 0.3\napply_b_dec_to_input = {apply}"),
        );
        check(&c, &params, &x, &[], ALL, None);
    }
}

#[test]
fn topk_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(2);
    let (params, x) = (random_params(&mut rng, false), random_x(&mut rng));
    for apply in [false, true] {
        let c = config("topk", &format!("k = 3\napply_b_dec_to_input = {apply}"));
        check(&c, &params, &x, &[], ALL, None);
    }
}

/// With dead latents, the AuxK loss trains them. They take no part in the main reconstruction
/// (they are not in any token's top k), so the total loss depends on their rows only through
/// AuxK, whose target (the main error) is held fixed: their gradient is exact.
#[test]
fn auxk_gradients_of_dead_latents_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(3);
    let (params, x) = (random_params(&mut rng, false), random_x(&mut rng));
    for architecture in ["topk", "batchtopk"] {
        let c = config(
            architecture,
            "k = 2\naux_k = 3\naux_coefficient = 0.5\napply_b_dec_to_input = false",
        );
        let mut arch = arch::build(&c, D_IN).unwrap();
        let ctx = StepContext {
            sparsity_scale: 1.0,
            dead: &[],
        };
        let out = arch::step(arch.as_mut(), &params, &x.x, &x.target, &ctx).unwrap();
        let dead: Vec<u32> = (0..D_SAE as u32)
            .filter(|&i| out.fired[i as usize] == 0)
            .collect();
        assert!(
            dead.len() >= 2,
            "the test needs latents that never fire; got {dead:?}"
        );
        let (terms, _) = losses(&c, &params, &x, &dead);
        assert!(terms.iter().any(|(n, v)| *n == "auxk" && *v > 0.0));
        check(&c, &params, &x, &dead, &["enc", "dec"], Some(&dead));
    }
}

#[test]
fn batchtopk_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(4);
    let (params, x) = (random_params(&mut rng, false), random_x(&mut rng));
    for apply in [false, true] {
        let c = config("batchtopk", &format!("k = 3\napply_b_dec_to_input = {apply}"));
        check(&c, &params, &x, &[], ALL, None);
    }
}

/// Three nested levels (latents 0..3, 0..7, 0..12): a latent's gradient gathers the MSE of
/// every level it takes part in.
#[test]
fn matryoshka_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(7);
    let (params, x) = (random_params(&mut rng, false), random_x(&mut rng));
    for apply in [false, true] {
        let c = config(
            "matryoshka",
            &format!("k = 4\nmatryoshka_groups = [3, 4, 5]\napply_b_dec_to_input = {apply}"),
        );
        let (terms, _) = losses(&c, &params, &x, &[]);
        assert!(
            terms.iter().any(|(n, v)| *n == "inner_mse" && *v > 0.0),
            "{terms:?}"
        );
        check(&c, &params, &x, &[], ALL, None);
    }
}

/// With one group, Matryoshka is BatchTopK: the same losses and gradients, bit for bit.
#[test]
fn matryoshka_with_one_group_is_batchtopk() {
    let mut rng = StdRng::seed_from_u64(8);
    let (params, x) = (random_params(&mut rng, false), random_x(&mut rng));
    let one = config("matryoshka", &format!("k = 4\nmatryoshka_groups = [{D_SAE}]"));
    let plain = config("batchtopk", "k = 4");
    let (one_terms, one_grads) = losses(&one, &params, &x, &[]);
    let (plain_terms, plain_grads) = losses(&plain, &params, &x, &[]);
    assert_eq!(one_terms, plain_terms);
    assert_eq!(one_grads, plain_grads);
}

#[test]
fn jumprelu_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(5);
    let (params, x) = (random_params(&mut rng, true), random_x(&mut rng));
    for apply in [false, true] {
        let c = config(
            "jumprelu",
            &format!("target_l0 = 4.0\napply_b_dec_to_input = {apply}"),
        );
        check(&c, &params, &x, &[], ALL, None);
    }
}

/// The threshold's straight-through gradient against a finite difference of width ε, for each
/// loss term: exact for the L0 count (before the penalty's square), first-order for the MSE (a
/// latent switching off removes its value, which lies within ε/2 of the threshold).
#[test]
fn jumprelu_threshold_gradient_is_a_finite_difference_of_width_epsilon() {
    let mut rng = StdRng::seed_from_u64(6);
    let mut params = random_params(&mut rng, true);
    // Small decoder rows keep the MSE's second-order term small next to the first.
    params.dec.iter_mut().for_each(|v| *v *= 0.2);
    let x = random_rows(&mut rng, 400);
    let x = Data { target: x.clone(), x };
    let eps = 0.04;
    let c = config(
        "jumprelu",
        &format!("target_l0 = 200.0\nl0_coefficient = 5.0\nthreshold_bandwidth = {eps}\napply_b_dec_to_input = false"),
    );
    let (_, grads) = losses(&c, &params, &x, &[]);
    let analytic = grads.log_threshold.unwrap();
    let (mut dot, mut nn, mut na) = (0.0, 0.0, 0.0);
    for (i, &analytic) in analytic.iter().enumerate() {
        let theta = params.log_threshold.as_ref().unwrap()[i].exp();
        let at = |t: f32| {
            let mut p = params.clone();
            p.log_threshold.as_mut().unwrap()[i] = t.ln();
            total(&c, &p, &x, &[])
        };
        // d/d(log θ) = θ · d/dθ
        let numeric = theta as f64 * (at(theta + eps as f32 / 2.0) - at(theta - eps as f32 / 2.0)) / eps;
        dot += numeric * analytic as f64;
        nn += numeric * numeric;
        na += (analytic as f64).powi(2);
    }
    let cosine = dot / (nn.sqrt() * na.sqrt());
    let ratio = na.sqrt() / nn.sqrt();
    assert!(
        cosine > 0.95 && (0.8..1.25).contains(&ratio),
        "cosine {cosine}, norm ratio {ratio}"
    );
}

/// Every architecture as a transcoder (its target another hook's activations) and as a skip
/// transcoder: the skip matrix's gradient, and everything else's, against finite differences.
#[test]
fn transcoder_and_skip_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(9);
    let data = random_pair(&mut rng);
    let transcoder = "target_hook = \"blocks.0.hook_mlp_out\"";
    for (architecture, extra) in [
        ("relu", "l1_coefficient = 0.3"),
        ("topk", "k = 3"),
        ("batchtopk", "k = 3"),
        ("matryoshka", "k = 4\nmatryoshka_groups = [3, 4, 5]"),
        ("jumprelu", "target_l0 = 4.0"),
    ] {
        let thresholds = architecture == "jumprelu";
        let plain = config(architecture, &format!("{extra}\n{transcoder}"));
        check(
            &plain,
            &random_params(&mut rng, thresholds),
            &data,
            &[],
            ALL,
            None,
        );
        let skip = config(
            architecture,
            &format!("{extra}\n{transcoder}\nskip_connection = true"),
        );
        let mut params = random_params(&mut rng, thresholds).with_zero_skip();
        params
            .skip
            .as_mut()
            .unwrap()
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-0.5..0.5f32));
        check(
            &skip,
            &params,
            &data,
            &[],
            &["enc", "b_enc", "dec", "b_dec", "skip"],
            None,
        );
    }
}

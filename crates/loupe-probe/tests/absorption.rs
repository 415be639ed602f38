//! Feature absorption on planted data: words starting with "a" carry direction e0 and those
//! starting with "b" e1; one "a" word in 25 also carries e2, and for those the SAE's "a" latent
//! is silent while a latent for e2, whose decoder row leans on e0, fires instead: SAEBench's
//! full absorption. The evaluation must find those words and no others.

use candle_core::{Device, Tensor};
use loupe_probe::absorption::{absorption, AbsorptionOptions, FirstLetterData};
use loupe_probe::matrix::Matrix;
use loupe_sae::{Activation, Sae, SaeMetadata};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const D: usize = 8;

/// A ReLU SAE of three latents: e0 unless e2 is there ("a"), e1 ("b"), and e2, decoded along
/// e0 + e2 (the absorbing latent).
fn planted_sae() -> Sae {
    // [d_in, d_sae]: entry (input j, latent i) at j·3 + i.
    let mut w_enc = vec![0f32; D * 3];
    let mut enc = |input: usize, latent: usize, v: f32| w_enc[input * 3 + latent] = v;
    enc(0, 0, 1.0);
    enc(2, 0, -2.0);
    enc(1, 1, 1.0);
    enc(2, 2, 1.0);
    let mut w_dec = vec![0f32; 3 * D]; // [d_sae, d_in]
    w_dec[0] = 1.0;
    w_dec[D + 1] = 1.0;
    w_dec[2 * D] = 1.0;
    w_dec[2 * D + 2] = 1.0;
    let cpu = &Device::Cpu;
    Sae {
        activation: Activation::Relu,
        d_in: D,
        d_sae: 3,
        w_enc: Tensor::from_vec(w_enc, (D, 3), cpu).unwrap(),
        b_enc: Tensor::from_vec(vec![-0.5f32; 3], 3, cpu).unwrap(),
        w_dec: Tensor::from_vec(w_dec, (3, D), cpu).unwrap(),
        b_dec: Tensor::zeros(D, candle_core::DType::F32, cpu).unwrap(),
        w_skip: None,
        apply_b_dec_to_input: false,
        metadata: SaeMetadata {
            model_name: "planted".into(),
            hook_name: "blocks.0.hook_resid_post".into(),
            hook_name_out: None,
            model_sha256: None,
            context_size: None,
            dataset_path: None,
            trained_architecture: Some("relu".into()),
            norm_cutoff: None,
        },
    }
}

#[test]
fn planted_absorption_is_found_where_it_was_planted_and_nowhere_else() {
    let mut rng = StdRng::seed_from_u64(5);
    // Words: "a", "b" and "c" (c words carry nothing), mixed, 80% for training.
    let n = 1500;
    let mut letters = Vec::with_capacity(n);
    let mut absorbed = Vec::with_capacity(n);
    let mut data = Vec::with_capacity(n * D);
    for i in 0..n {
        let letter = ['a', 'b', 'c'][i % 3];
        let is_absorbed = letter == 'a' && (i / 3) % 25 == 0;
        let mut h: Vec<f32> = (0..D).map(|_| rng.random_range(-0.3..0.3)).collect();
        match letter {
            'a' => h[0] += 3.0,
            'b' => h[1] += 3.0,
            _ => {}
        }
        if is_absorbed {
            h[2] += 3.0;
        }
        letters.push(letter);
        absorbed.push(is_absorbed);
        data.extend(h);
    }
    let train_count = 1200;
    let words = FirstLetterData {
        activations: Matrix::new(n, D, data),
        letters: letters.clone(),
        train_count,
    };
    let report = absorption(
        &words,
        &planted_sae(),
        &AbsorptionOptions::default(),
        &mut loupe_util::NoProgress,
    )
    .unwrap();
    let a = &report.letters[0];
    assert_eq!(a.letter, 'a');
    assert!(a.evaluated && a.probe_f1 > 0.95, "{a:?}");
    // The "a" latent alone: adding the absorbing latent raises F1 by less than 0.03.
    assert_eq!(a.main_latents, vec![0], "{a:?}");
    let planted = (train_count..n).filter(|&r| absorbed[r]).count();
    assert!(planted >= 3, "{planted}");
    assert_eq!(
        a.probe_true_positives,
        (train_count..n).filter(|&r| letters[r] == 'a').count()
    );
    assert_eq!(a.full_absorptions, planted, "{a:?}");
    // The absorbing latent carries the whole projection of those words: fraction 1 each.
    let expected = planted as f64 / a.probe_true_positives as f64;
    assert!((a.mean_absorption_fraction - expected).abs() < 1e-9, "{a:?}");
    assert!((a.full_absorption_rate - expected).abs() < 1e-9, "{a:?}");
    // "b" has its own latent and nothing absorbs it; no word starts with any other letter.
    let b = &report.letters[1];
    assert!(b.evaluated && b.main_latents == vec![1], "{b:?}");
    assert_eq!((b.full_absorptions, b.mean_absorption_fraction), (0, 0.0));
    assert!(report.letters[3..].iter().all(|l| !l.evaluated));
    assert_eq!(
        report.letters_evaluated,
        2 + usize::from(report.letters[2].evaluated)
    );
}

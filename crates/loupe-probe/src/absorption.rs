//! Feature absorption on SAEBench's first-letter task (Chanin et al., "A is for Absorption"; the
//! absorption fraction is Demian Till's): how often an SAE's latents for "starts with L" stay
//! silent on a word that starts with L because some more specific latent has absorbed the
//! direction.
//!
//! The steps, as SAEBench takes them:
//!
//! 1. words: the vocabulary's alphabetic tokens (a leading space allowed), shuffled with a seed,
//!    cut into training and test words;
//! 2. prompts: each word after in-context examples from its own side of the split,
//!    `"{example} has the first letter: E\n" … "{word} has the first letter:"`, and the activation
//!    at the SAE's hook on the word's token;
//! 3. the ground truth: one class-balanced logistic probe per letter (one against the rest) on the
//!    activations, its held-out F1; letters whose probe scores below `min_probe_f1` are left out;
//! 4. the letter's main latents: k-sparse probes on the SAE's latents (top k by standardised mean
//!    difference, as loupe's sparse probing ranks them, where SAEBench ranks by an L1 probe's
//!    weights), k growing from 1 while each step raises the held-out F1 by more than `f1_jump`;
//! 5. on each test word of the letter that the probe finds (a probe true positive), with ŵ the
//!    probe's unit direction, p = h·ŵ the activation's projection on it, and each latent's
//!    projection `f_i · (d_i·ŵ)` (SAEBench writes `f_i · cos(d_i, ŵ)`, the same for the unit-norm
//!    decoder rows it assumes; loupe's SAEs keep their training normalisation in the decoder, so
//!    the rows' norms are kept here):
//!    - the absorption fraction: the share of the probe projection that latents other than the
//!      main ones (at most 3, each with `cos(d_i, ŵ) ≥ 0.1`) carry, 0 when they carry less than
//!      40% of p or the main latents already carry all of it ([`absorption_fraction`]);
//!    - full absorption: no main latent fires, and the latent with the largest projection is
//!      aligned with the probe (`cos ≥ 0.025`) and carries at least 40% of p ([`full_absorption`]).
//!
//! Per letter, the mean absorption fraction and the full-absorption rate over its probe true
//! positives; the report averages both over the letters evaluated.
//!
//! SAEBench recommends models of 2B parameters or more: a small model knows its tokens' spelling
//! less well, so its probes are weaker and fewer letters pass, and the figures are noisier.

use candle_core::{DType, Device, Tensor};
use loupe_model::{Batch, HookPoint, Hooks, Model};
use loupe_sae::Sae;
use loupe_util::Progress;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::features::Level;
use crate::matrix::Matrix;
use crate::rank::{RankOptions, Ranking};
use crate::sweep::{sweep, ExactOptions, ProbeFit, SweepOptions};
use crate::{Error, Result};

/// The prompt's template; the activation is read at the word's token.
pub const TEMPLATE_AFTER_WORD: &str = " has the first letter:";

/// SAEBench's thresholds.
const FULL_ABSORPTION_COS: f64 = 0.025;
const FRACTION_ABSORBER_COS: f64 = 0.1;
const PROJECTION_SHARE: f64 = 0.4;
const MAX_ABSORBERS: usize = 3;
/// An activation at or below this counts as not firing.
const FIRES_ABOVE: f64 = 1e-8;

/// Prompts run through the model together.
const PROMPT_BATCH: usize = 32;

/// How the absorption evaluation runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbsorptionOptions {
    /// Vocabulary words used at most (a seeded sample of the alphabetic tokens).
    pub words: usize,
    /// In-context examples before each word (SAEBench: 10).
    pub icl_examples: usize,
    /// The fraction of words held out for testing (SAEBench: 0.2).
    pub held_out: f64,
    /// Seeds the word sample, the split and the examples.
    pub seed: u64,
    /// The largest k of the main-latent search (SAEBench: 10).
    pub max_k: usize,
    /// A k counts as another main latent when it raises the held-out F1 by more than this
    /// (SAEBench: 0.03).
    pub f1_jump: f64,
    /// Letters whose ground-truth probe has a lower held-out F1 are left out (SAEBench: 0.6).
    pub min_probe_f1: f64,
}

impl Default for AbsorptionOptions {
    fn default() -> Self {
        AbsorptionOptions {
            words: 6000,
            icl_examples: 10,
            held_out: 0.2,
            seed: 0,
            max_k: 10,
            f1_jump: 0.03,
            min_probe_f1: 0.6,
        }
    }
}

/// One letter's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LetterAbsorption {
    /// The letter, lower case.
    pub letter: char,
    /// Training and test words starting with it.
    pub words: [usize; 2],
    /// Held-out F1 of the ground-truth probe.
    pub probe_f1: f64,
    /// Whether the letter was evaluated (its probe F1 reached `min_probe_f1` and it has test
    /// words the probe finds).
    pub evaluated: bool,
    /// The main latents, and the held-out F1 of the k-sparse probe on them.
    pub main_latents: Vec<usize>,
    /// Held-out F1 of the probe on the main latents.
    pub main_f1: f64,
    /// Test words of the letter the probe finds: what the rates below are out of.
    pub probe_true_positives: usize,
    /// Mean absorption fraction over those words.
    pub mean_absorption_fraction: f64,
    /// Words fully absorbed.
    pub full_absorptions: usize,
    /// `full_absorptions / probe_true_positives`.
    pub full_absorption_rate: f64,
}

/// The whole evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbsorptionReport {
    /// The model's name.
    pub model: String,
    /// The hook the SAE reads.
    pub hook: String,
    /// Training and test words.
    pub words: [usize; 2],
    /// Letters evaluated.
    pub letters_evaluated: usize,
    /// The mean over evaluated letters of their mean absorption fraction (SAEBench's
    /// `mean_absorption_fraction_score`).
    pub mean_absorption_fraction: f64,
    /// The mean over evaluated letters of their full-absorption rate
    /// (`mean_full_absorption_score`).
    pub mean_full_absorption: f64,
    /// The mean number of main latents per evaluated letter (`mean_num_split_features`).
    pub mean_main_latents: f64,
    /// Per letter, a to z.
    pub letters: Vec<LetterAbsorption>,
    /// The settings.
    pub options: AbsorptionOptions,
}

/// One latent's part of a word's probe projection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatentProjection {
    /// The latent.
    pub latent: usize,
    /// Its activation f_i.
    pub activation: f64,
    /// cos(d_i, ŵ).
    pub cos: f64,
    /// ‖d_i‖.
    pub decoder_norm: f64,
}

impl LatentProjection {
    /// `f_i · (d_i·ŵ)`: how far the latent moves the reconstruction along the probe.
    pub fn projection(&self) -> f64 {
        self.activation * self.decoder_norm * self.cos
    }
}

/// SAEBench's absorption fraction of one word: `probe_projection` is h·ŵ, `main` the main
/// latents, `others` every other latent.
pub fn absorption_fraction(
    probe_projection: f64,
    main: &[LatentProjection],
    others: &[LatentProjection],
) -> f64 {
    let main_projection: f64 = main.iter().map(LatentProjection::projection).sum();
    let mut absorbers: Vec<f64> = others
        .iter()
        .filter(|l| l.cos >= FRACTION_ABSORBER_COS && l.projection() > 0.0)
        .map(LatentProjection::projection)
        .collect();
    absorbers.sort_by(|a, b| b.total_cmp(a));
    let absorbed: f64 = absorbers.iter().take(MAX_ABSORBERS).sum();
    if main_projection >= probe_projection || absorbed / probe_projection < PROJECTION_SHARE {
        return 0.0;
    }
    if main_projection <= 0.0 {
        return 1.0;
    }
    let absorbed = absorbed.min(probe_projection - main_projection);
    (absorbed / (absorbed + main_projection)).clamp(0.0, 1.0)
}

/// SAEBench's full absorption of one word: no main latent fires, and `top` (the latent with the
/// largest projection) is aligned with the probe and carries at least 40% of `probe_projection`.
pub fn full_absorption(probe_projection: f64, main: &[LatentProjection], top: &LatentProjection) -> bool {
    main.iter().all(|l| l.activation < FIRES_ABOVE)
        && top.cos >= FULL_ABSORPTION_COS
        && probe_projection >= 0.0
        && top.projection() / probe_projection >= PROJECTION_SHARE
}

/// The vocabulary's alphabetic tokens (ASCII letters, one leading space allowed), as
/// (token id, text), in id order.
pub fn alphabetic_tokens(model: &Model) -> Vec<(u32, String)> {
    let tokenizer = &model.tokenizer;
    (0..tokenizer.vocab_size() as u32)
        .filter_map(|id| {
            let text = tokenizer.token_text(id);
            let word = text.strip_prefix(' ').unwrap_or(&text);
            (!word.is_empty() && word.chars().all(|c| c.is_ascii_alphabetic())).then_some((id, text))
        })
        .collect()
}

/// A word's first letter, lower case (its first alphabetic character).
fn first_letter(word: &str) -> char {
    word.trim_start()
        .chars()
        .next()
        .expect("alphabetic tokens are not empty")
        .to_ascii_lowercase()
}

/// The prompt of `word` after `examples`, as token ids, and the index of the word's token.
fn prompt_ids(model: &Model, word: (u32, &str), examples: &[&str]) -> Result<(Vec<u32>, usize)> {
    let mut prefix = String::new();
    for example in examples {
        let answer = first_letter(example).to_ascii_uppercase();
        prefix.push_str(&format!("{example}{TEMPLATE_AFTER_WORD} {answer}\n"));
    }
    // The word goes in as its own token, so that the activation read is the word's whatever the
    // tokenizer would make of the joined text.
    let mut ids = if prefix.is_empty() {
        model.tokenizer.bos().into_iter().collect()
    } else {
        model.encode_prompt(&prefix)?
    };
    let position = ids.len();
    ids.push(word.0);
    ids.extend(model.tokenizer.encode(TEMPLATE_AFTER_WORD)?);
    Ok((ids, position))
}

/// The words' activations, first letters and split.
pub struct FirstLetterData {
    /// The activation at the SAE's hook on each word's token, training words first.
    pub activations: Matrix,
    /// Each word's first letter, lower case, in the rows' order.
    pub letters: Vec<char>,
    /// Rows `0..train_count` are training words, the rest test words.
    pub train_count: usize,
}

/// Runs the evaluation of `sae` (reading `hook` of `model`): the words' prompts through the
/// model ([`first_letter_data`]), then [`absorption`].
pub fn first_letter_absorption(
    model: &Model,
    sae: &Sae,
    hook: HookPoint,
    options: &AbsorptionOptions,
    progress: &mut dyn Progress,
) -> Result<AbsorptionReport> {
    let width = model.width(hook)?;
    if width != sae.d_in {
        return Err(Error::dataset(format!(
            "the SAE reads {} values, but {hook} of {} is {width} wide: use the SAE's own model and hook",
            sae.d_in, model.name
        )));
    }
    let data = first_letter_data(model, hook, options, progress)?;
    let mut report = absorption(&data, sae, options, progress)?;
    report.model = model.name.clone();
    report.hook = hook.to_string();
    Ok(report)
}

/// Samples the words, splits them, and reads each word's activation at `hook` after its
/// in-context examples.
pub fn first_letter_data(
    model: &Model,
    hook: HookPoint,
    options: &AbsorptionOptions,
    progress: &mut dyn Progress,
) -> Result<FirstLetterData> {
    if !(0.0 < options.held_out && options.held_out < 1.0) || options.max_k == 0 {
        return Err(Error::dataset(
            "held_out must be between 0 and 1 and max_k at least 1",
        ));
    }
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut vocabulary = alphabetic_tokens(model);
    vocabulary.shuffle(&mut rng);
    vocabulary.truncate(options.words);
    let test_count = ((vocabulary.len() as f64) * options.held_out).round() as usize;
    let train_count = vocabulary.len() - test_count;
    if train_count < 2 * options.icl_examples.max(1) || test_count < 2 * options.icl_examples.max(1) {
        return Err(Error::dataset(format!(
            "{} has {} alphabetic tokens (of {} asked for): too few for a training and a test side \
             with {} in-context examples each; use more words or fewer examples",
            model.name,
            vocabulary.len(),
            options.words,
            options.icl_examples
        )));
    }
    let (train_words, test_words) = vocabulary.split_at(train_count);
    progress.start("first-letter prompts", vocabulary.len() as u64, 0);
    let mut prompts = Vec::with_capacity(vocabulary.len());
    for side in [train_words, test_words] {
        let texts: Vec<&str> = side.iter().map(|(_, t)| t.as_str()).collect();
        for (i, (id, text)) in side.iter().enumerate() {
            let mut examples: Vec<&str> = texts
                .choose_multiple(&mut rng, options.icl_examples + 1)
                .copied()
                .filter(|e| *e != texts[i])
                .collect();
            examples.truncate(options.icl_examples);
            prompts.push(prompt_ids(model, (*id, text), &examples)?);
        }
    }
    Ok(FirstLetterData {
        activations: word_activations(model, hook, &prompts, progress)?,
        letters: vocabulary.iter().map(|(_, t)| first_letter(t)).collect(),
        train_count,
    })
}

/// Absorption of `sae` on the words of `data` (steps 3 to 5 of the module docs). The report's
/// model and hook are left empty for the caller.
pub fn absorption(
    data: &FirstLetterData,
    sae: &Sae,
    options: &AbsorptionOptions,
    progress: &mut dyn Progress,
) -> Result<AbsorptionReport> {
    let (activations, letters, train_count) = (&data.activations, &data.letters, data.train_count);
    let width = activations.cols;
    let latents = crate::sae_probing::encode(sae, activations)?;
    let train: Vec<usize> = (0..train_count).collect();
    let test: Vec<usize> = (train_count..letters.len()).collect();
    let decoder = DecoderRows::new(sae)?;

    let mut report_letters = Vec::new();
    for letter in 'a'..='z' {
        let labels = |rows: &[usize]| -> Vec<bool> { rows.iter().map(|&r| letters[r] == letter).collect() };
        let data = Dataset {
            feature: format!("first letter {letter}"),
            level: Level::Token,
            train: train.clone(),
            train_labels: labels(&train),
            held_out: test.clone(),
            held_out_labels: labels(&test),
        };
        let words = [
            data.train_labels.iter().filter(|&&y| y).count(),
            data.held_out_labels.iter().filter(|&&y| y).count(),
        ];
        let mut row = LetterAbsorption {
            letter,
            words,
            probe_f1: 0.0,
            evaluated: false,
            main_latents: Vec::new(),
            main_f1: 0.0,
            probe_true_positives: 0,
            mean_absorption_fraction: 0.0,
            full_absorptions: 0,
            full_absorption_rate: 0.0,
        };
        if words.contains(&0) || words[0] == train.len() {
            report_letters.push(row);
            continue;
        }
        // The ground truth: a probe on every dimension of the activation.
        let probe = sweep(activations, &data, &sweep_options(vec![width]))?.remove(0);
        row.probe_f1 = probe.held_out.f1;
        // The main latents: k grows while each step raises the held-out F1 enough.
        let ks: Vec<usize> = (1..=options.max_k.min(sae.d_sae)).collect();
        let mut best = f64::NEG_INFINITY;
        for fit in sweep(&latents, &data, &sweep_options(ks))? {
            if fit.held_out.f1 <= best + options.f1_jump {
                break;
            }
            best = fit.held_out.f1;
            row.main_latents = fit.neurons.clone();
            row.main_f1 = fit.held_out.f1;
        }
        if row.probe_f1 < options.min_probe_f1 {
            report_letters.push(row);
            continue;
        }
        let (direction, bias) = raw_direction(&probe, width);
        let norm = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
        let unit: Vec<f64> = direction.iter().map(|v| v / norm).collect();
        let cos = decoder.cosines_with(&unit)?;
        let mut fractions = 0.0;
        for &r in test.iter().filter(|&&r| letters[r] == letter) {
            let h = activations.row(r);
            if dot(h, &direction) + bias <= 0.0 {
                continue; // not a probe true positive
            }
            row.probe_true_positives += 1;
            let probe_projection = dot(h, &unit);
            let f = latents.row(r);
            let projections: Vec<LatentProjection> = (0..sae.d_sae)
                .map(|i| LatentProjection {
                    latent: i,
                    activation: f64::from(f[i]),
                    cos: cos[i],
                    decoder_norm: decoder.norms[i],
                })
                .collect();
            let is_main = |i: usize| row.main_latents.contains(&i);
            let main: Vec<LatentProjection> = row.main_latents.iter().map(|&i| projections[i]).collect();
            let others: Vec<LatentProjection> = projections
                .iter()
                .filter(|l| !is_main(l.latent))
                .copied()
                .collect();
            fractions += absorption_fraction(probe_projection, &main, &others);
            let top = projections
                .iter()
                .max_by(|a, b| a.projection().total_cmp(&b.projection()))
                .expect("an SAE has latents");
            if full_absorption(probe_projection, &main, top) {
                row.full_absorptions += 1;
            }
        }
        if row.probe_true_positives > 0 {
            row.evaluated = true;
            row.mean_absorption_fraction = fractions / row.probe_true_positives as f64;
            row.full_absorption_rate = row.full_absorptions as f64 / row.probe_true_positives as f64;
        }
        progress.note(&format!(
            "{letter}: probe F1 {:.2}, {} main latents, {} true positives",
            row.probe_f1,
            row.main_latents.len(),
            row.probe_true_positives
        ));
        report_letters.push(row);
    }
    let evaluated: Vec<&LetterAbsorption> = report_letters.iter().filter(|l| l.evaluated).collect();
    let mean = |f: &dyn Fn(&LetterAbsorption) -> f64| {
        evaluated.iter().map(|l| f(l)).sum::<f64>() / evaluated.len().max(1) as f64
    };
    Ok(AbsorptionReport {
        model: String::new(),
        hook: String::new(),
        words: [train_count, letters.len() - train_count],
        letters_evaluated: evaluated.len(),
        mean_absorption_fraction: mean(&|l| l.mean_absorption_fraction),
        mean_full_absorption: mean(&|l| l.full_absorption_rate),
        mean_main_latents: mean(&|l| l.main_latents.len() as f64),
        letters: report_letters,
        options: options.clone(),
    })
}

/// A probe of the sweep (standardised columns `probe.neurons`) as a direction and bias on the raw
/// activation: `score = h·w + b`.
fn raw_direction(probe: &ProbeFit, width: usize) -> (Vec<f64>, f64) {
    let mut w = vec![0.0; width];
    let mut b = probe.bias;
    let s = probe.standardization.as_ref().expect("the sweep standardises");
    for (i, &j) in probe.neurons.iter().enumerate() {
        w[j] = probe.weights[i] / s.std[i];
        b -= probe.weights[i] * s.mean[i] / s.std[i];
    }
    (w, b)
}

/// A k sweep over standardised columns ranked by mean difference, L2 strength C = 1, no exact
/// search.
fn sweep_options(ks: Vec<usize>) -> SweepOptions {
    SweepOptions {
        ks,
        rankings: vec![Ranking::MeanDiff],
        standardize: true,
        c: 1.0,
        rank: RankOptions::default(),
        exact: ExactOptions {
            max_k: 0,
            ..ExactOptions::default()
        },
    }
}

/// The activation at `hook` on each prompt's word token, `[prompts, width]`.
fn word_activations(
    model: &Model,
    hook: HookPoint,
    prompts: &[(Vec<u32>, usize)],
    progress: &mut dyn Progress,
) -> Result<Matrix> {
    let width = model.width(hook)?;
    let mut data = Vec::with_capacity(prompts.len() * width);
    for chunk in prompts.chunks(PROMPT_BATCH) {
        let sequences: Vec<Vec<u32>> = chunk.iter().map(|(ids, _)| ids.clone()).collect();
        let batch = Batch::left_padded(&sequences, model.pad_id(), model.device())?;
        let mut hooks = Hooks::new().capture(hook);
        model.capture(&batch, &mut hooks)?;
        let captured = hooks.captured(hook).expect("the hook was captured");
        for (row, (_, position)) in chunk.iter().enumerate() {
            let column = batch.pads()[row] + position;
            data.extend(
                captured
                    .get(row)?
                    .get(column)?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?,
            );
        }
        progress.advance(chunk.len() as u64);
    }
    Ok(Matrix::new(prompts.len(), width, data))
}

/// The decoder rows' norms, and the rows normalised for cosines with a direction.
struct DecoderRows {
    norms: Vec<f64>,
    unit_rows: Tensor,
}

impl DecoderRows {
    fn new(sae: &Sae) -> Result<Self> {
        let w = sae.w_dec.to_dtype(DType::F32)?;
        let norms = w.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(DecoderRows {
            norms: norms
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect(),
            unit_rows: w.broadcast_div(&norms)?,
        })
    }

    /// cos(d_i, `unit`) for every latent i (`unit` of length 1).
    fn cosines_with(&self, unit: &[f64]) -> Result<Vec<f64>> {
        let v: Vec<f32> = unit.iter().map(|&x| x as f32).collect();
        let v = Tensor::from_vec(v, (unit.len(), 1), &Device::Cpu)?;
        let cos = self.unit_rows.matmul(&v)?.squeeze(1)?.to_vec1::<f32>()?;
        Ok(cos.into_iter().map(f64::from).collect())
    }
}

fn dot(x: &[f32], w: &[f64]) -> f64 {
    x.iter().zip(w).map(|(&a, &b)| f64::from(a) * b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latent(latent: usize, activation: f64, cos: f64) -> LatentProjection {
        LatentProjection {
            latent,
            activation,
            cos,
            decoder_norm: 1.0,
        }
    }

    #[test]
    fn the_absorption_fraction_is_the_absorbers_share_beside_the_main_latents() {
        // p = 10: the main latent carries 2, two aligned absorbers 3 and 4, a third 1 (under the
        // 0.1 cosine floor), a fourth negative.
        let main = [latent(0, 4.0, 0.5)];
        let others = [
            latent(1, 6.0, 0.5),
            latent(2, 8.0, 0.5),
            latent(3, 20.0, 0.05),
            latent(4, 5.0, -0.5),
        ];
        // Absorbed 3 + 4 = 7 (≥ 40% of 10), capped by the unaccounted 10 − 2 = 8: 7 / (7 + 2).
        let fraction = absorption_fraction(10.0, &main, &others);
        assert!((fraction - 7.0 / 9.0).abs() < 1e-12, "{fraction}");
        // The main latents carry everything: no absorption.
        assert_eq!(absorption_fraction(10.0, &[latent(0, 30.0, 0.5)], &others), 0.0);
        // Absorbers under 40% of the projection: none.
        assert_eq!(absorption_fraction(10.0, &main, &[latent(1, 6.0, 0.5)]), 0.0);
        // The main latents silent: all of it.
        assert_eq!(absorption_fraction(10.0, &[latent(0, 0.0, 0.5)], &others), 1.0);
        // At most three absorbers count: 4 + 3 + 2.5, capped at 8.
        let many = [
            latent(1, 8.0, 0.5),
            latent(2, 6.0, 0.5),
            latent(3, 5.0, 0.5),
            latent(4, 4.0, 0.5),
        ];
        let fraction = absorption_fraction(10.0, &main, &many);
        assert!((fraction - 8.0 / 10.0).abs() < 1e-12, "{fraction}");
    }

    #[test]
    fn full_absorption_needs_silent_main_latents_and_an_aligned_top_latent() {
        let silent = [latent(0, 0.0, 0.9)];
        assert!(full_absorption(10.0, &silent, &latent(7, 20.0, 0.3)));
        // The main latent fires a little: not absorbed.
        assert!(!full_absorption(
            10.0,
            &[latent(0, 0.01, 0.9)],
            &latent(7, 20.0, 0.3)
        ));
        // The top latent is hardly aligned (cos < 0.025) or carries too little (< 40%).
        assert!(!full_absorption(10.0, &silent, &latent(7, 200.0, 0.02)));
        assert!(!full_absorption(10.0, &silent, &latent(7, 10.0, 0.3)));
        // A negative probe projection is never absorption.
        assert!(!full_absorption(-1.0, &silent, &latent(7, 20.0, 0.3)));
    }
}

//! SAEBench's sparse probing: for each labelled feature, the best k-sparse probe on an SAE's
//! latents against the best k-sparse probe on the model's own neurons at the same hook. An SAE
//! whose latents isolate the feature reaches a high F1 with one or two latents where the neurons
//! need more.
//!
//! Both sides go through the same k sweep as `loupe probe train` (the top k by standardised mean
//! difference, then a class-balanced L2 logistic regression; F1 on held-out documents), on the same
//! tokens and the same split. The latents are the SAE's encoding of the stored activations.

use candle_core::{Device, Tensor};
use loupe_data::reader::Store;
use loupe_model::{HookPoint, Tokenizer};
use loupe_sae::Sae;
use loupe_util::Problems as _;
use serde::{Deserialize, Serialize};

use crate::config::ProbeConfig;
use crate::dataset::{build_dataset, document_means, load_examples, Examples};
use crate::features::{resolve_features, token_labels, Level};
use crate::matrix::Matrix;
use crate::rank::Ranking;
use crate::sweep::{sweep, ExactOptions};
use crate::{Error, Result};

/// The k values SAEBench reports.
pub const SAEBENCH_KS: &[usize] = &[1, 2, 5];

/// Rows encoded at once: bounds the dense `[rows, d_sae]` block of pre-activations.
const ENCODE_ROWS: usize = 4096;

/// One feature at one k: the neurons' probe against the latents'.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SparseProbingRow {
    /// The feature's name.
    pub feature: String,
    /// Neurons (or latents) each probe reads.
    pub k: usize,
    /// Held-out F1 of the probe on the k neurons with the largest mean difference.
    pub neurons_f1: f64,
    /// Those neurons.
    pub neurons: Vec<usize>,
    /// Held-out F1 of the probe on the k latents with the largest mean difference.
    pub latents_f1: f64,
    /// Those latents.
    pub latents: Vec<usize>,
}

/// Sparse probing of `sae` at `hook`, on the first store of `config` (its tokens, split, features
/// and regularisation; the k values are `config.ks` or SAEBench's 1, 2 and 5). `tokenizer` is the
/// model's, for features defined by token text. A feature that lacks a class on either side of
/// the split is skipped with a note through `progress`.
pub fn sparse_probing(
    config: &ProbeConfig,
    sae: &Sae,
    hook: HookPoint,
    tokenizer: &Tokenizer,
    progress: &mut dyn loupe_util::Progress,
) -> Result<Vec<SparseProbingRow>> {
    let store_dir = config
        .stores
        .first()
        .ok_or_else(|| Error::config("stores", "name the store whose labels define the features"))?;
    let store = Store::open(store_dir)?;
    let width = store.manifest.hook(hook).map(|h| h.width);
    if width != Some(sae.d_in) {
        return Err(Error::config(
            "stores",
            format!(
                "{} holds {hook} {}, but the SAE reads {} values: use a store of the SAE's hook",
                store_dir.display(),
                width.map_or("not at all".to_string(), |w| format!("{w} wide")),
                sae.d_in
            ),
        ));
    }
    let features = resolve_features(&config.features, &store)?;
    let neurons = load_examples(&store, hook, config.max_tokens, progress)?;
    let latents = Examples {
        hook,
        tokens: neurons.tokens.clone(),
        x: encode(sae, &neurons.x)?,
    };
    let (neuron_docs, latent_docs) = if features.iter().any(|f| f.level == Level::Document) {
        (Some(document_means(&neurons)), Some(document_means(&latents)))
    } else {
        (None, None)
    };
    let ks: Vec<usize> = config.ks.clone().unwrap_or_else(|| SAEBENCH_KS.to_vec());
    let mut options = config.sweep_options(ks);
    options.rankings = vec![Ranking::MeanDiff];
    options.exact = ExactOptions {
        max_k: 0,
        ..config.exact.clone()
    };
    let options_for = |width: usize| {
        let mut options = options.clone();
        options.ks.retain(|&k| k <= width);
        options
    };

    let mut rows = Vec::new();
    for feature in &features {
        let labels = token_labels(feature, &neurons.tokens, tokenizer);
        let data = match build_dataset(
            feature,
            &labels,
            &neurons.tokens,
            neuron_docs.as_ref(),
            config.held_out,
            config.seed,
            store_dir,
        ) {
            Ok(data) => data,
            // A feature these tokens cannot probe (one class on a side of the split) is left
            // out, said, and the others go on.
            Err(Error::Dataset { message }) => {
                progress.note(&format!("skipped: {message}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let (x_neurons, x_latents) = match feature.level {
            Level::Token => (&neurons.x, &latents.x),
            Level::Document => (
                &neuron_docs.as_ref().expect("computed above").x,
                &latent_docs.as_ref().expect("computed above").x,
            ),
        };
        let by_neurons = sweep(x_neurons, &data, &options_for(x_neurons.cols))?;
        let by_latents = sweep(x_latents, &data, &options_for(x_latents.cols))?;
        for (n, l) in by_neurons.iter().zip(&by_latents) {
            rows.push(SparseProbingRow {
                feature: feature.name.clone(),
                k: n.k,
                neurons_f1: n.held_out.f1,
                neurons: n.neurons.clone(),
                latents_f1: l.held_out.f1,
                latents: l.neurons.clone(),
            });
        }
        progress.note(&format!("{}: probed {} k values", feature.name, by_neurons.len()));
    }
    Ok(rows)
}

/// The SAE's latents for every row of `x`, `[rows, d_sae]`.
pub(crate) fn encode(sae: &Sae, x: &Matrix) -> Result<Matrix> {
    let mut data = Vec::with_capacity(x.rows * sae.d_sae);
    for start in (0..x.rows).step_by(ENCODE_ROWS) {
        let rows = ENCODE_ROWS.min(x.rows - start);
        let block = Tensor::from_slice(
            &x.data[start * x.cols..(start + rows) * x.cols],
            (rows, x.cols),
            &Device::Cpu,
        )?;
        let acts = sae
            .encode(&block)
            .map_err(|e| Error::dataset(format!("cannot encode with the SAE: {e}")))?;
        data.extend(acts.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(Matrix::new(x.rows, sae.d_sae, data))
}

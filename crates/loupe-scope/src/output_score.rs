//! Choosing an SAE latent for a concept by what it does to the output (Arad et al. 2025, "SAEs Are
//! Good for Steering – If You Select the Right Features"): a latent's output score is how far its
//! decoder row, read through the model's final norm and unembedding (the logit lens of the
//! direction), raises the logits of the concept's tokens above the rest of the vocabulary, as a
//! z-score: `(mean over concept tokens − mean over the vocabulary) / std over the vocabulary`.
//! Latents that fire on a concept (chosen by input, from prompt sets) need not be the ones that
//! make the model say it; this chooses the second kind.

use candle_core::{DType, Tensor, D};
use loupe_model::Model;
use loupe_sae::Sae;

use crate::Result;

/// Decoder rows unembedded together (each row's logits over the vocabulary are held at once).
const ROWS_AT_ONCE: usize = 256;

/// The tokens a concept word starts with, as the model would write it mid-sentence (" Paris")
/// and at the start of a text ("Paris"), for every word of `concepts`.
pub fn concept_tokens(model: &Model, concepts: &[String]) -> Result<Vec<u32>> {
    let bos = model.tokenizer.bos();
    let mut tokens = Vec::new();
    for word in concepts {
        for text in [format!(" {}", word.trim()), word.trim().to_string()] {
            let ids = model.tokenizer.encode(&text)?;
            if let Some(&first) = ids.iter().find(|&&id| Some(id) != bos) {
                if !tokens.contains(&first) {
                    tokens.push(first);
                }
            }
        }
    }
    Ok(tokens)
}

/// Every latent's output score for the tokens `concept` (see the module docs).
pub fn output_scores(model: &Model, sae: &Sae, concept: &[u32]) -> Result<Vec<f32>> {
    let d_in = sae.d_in;
    let concept = Tensor::new(concept, model.device())?;
    let mut scores = Vec::with_capacity(sae.d_sae);
    for start in (0..sae.d_sae).step_by(ROWS_AT_ONCE) {
        let rows = ROWS_AT_ONCE.min(sae.d_sae - start);
        let directions = sae.w_dec.narrow(0, start, rows)?.reshape((1, rows, d_in))?;
        let logits = model.unembed(&directions)?.squeeze(0)?.to_dtype(DType::F32)?; // [rows, vocab]
        let mean = logits.mean_keepdim(D::Minus1)?;
        let std = logits
            .broadcast_sub(&mean)?
            .sqr()?
            .mean_keepdim(D::Minus1)?
            .sqrt()?;
        let concept_mean = logits.index_select(&concept, 1)?.mean_keepdim(D::Minus1)?;
        let z = (concept_mean - &mean)?.broadcast_div(&std)?;
        scores.extend(z.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(scores)
}

//! The steering task (`loupe steer`): neutral instructions answered by the model while a named
//! concept is pushed in at one layer, in every way loupe can name it (an SAE latent, a probe or
//! mean-difference direction, classifier-free guidance against a null prompt), beside the
//! prompting baseline (the instruction with "Mention <concept>." appended) and the unsteered
//! answer. Each answer is judged for the concept, the instruction and fluency ([`study`]), each
//! method's strength is chosen on held-out instructions, and the reports draw concept–fluency
//! curves as the strength grows.
//!
//! The pieces, in the order a run uses them: the config ([`config`]), the checked plan with its
//! steering vectors ([`plan`]), generation and judging ([`run`]), the study ([`study`]) and the
//! reports ([`report`]).

pub mod config;
pub mod plan;
pub mod report;
pub mod run;
pub mod study;

pub use config::SteerConfig;
pub use plan::SteerPlan;
pub use run::{SteerRecord, SteerSummary};

use crate::results::read_records;
use crate::Result;

impl SteerPlan<'_> {
    /// The study of every concept from the records in `out/results.jsonl`.
    pub fn study(&self, records: &[SteerRecord]) -> Vec<study::ConceptStudy> {
        self.config
            .concepts
            .iter()
            .enumerate()
            .map(|(c, concept)| {
                let labels: Vec<(String, String, Option<f32>)> = self
                    .variants
                    .iter()
                    .filter(|v| v.concept == c)
                    .map(|v| (v.family.clone(), v.label.clone(), v.value))
                    .collect();
                study::study_concept(
                    &concept.name,
                    &self.instructions,
                    &labels,
                    records,
                    self.config.seed,
                )
            })
            .collect()
    }

    /// The records of `out/results.jsonl`.
    pub fn read_results(&self) -> Result<Vec<SteerRecord>> {
        read_records(&self.config.out.join("results.jsonl"))
    }
}

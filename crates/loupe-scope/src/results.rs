//! Results of a scope run, one JSON object per patched generation in `results.jsonl`, appended as
//! each batch finishes so that an interrupted run resumes where it stopped. Steering runs
//! ([`crate::steer`]) keep their records the same way.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use loupe_util::Problems as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One patched generation and its judgements.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ScopeRecord {
    /// Index of the source prompt in the run's list.
    pub source_index: usize,
    /// The source prompt's text.
    pub source: String,
    /// The source layer the activation was taken at.
    pub layer: usize,
    /// The target layer it was patched into.
    pub target_layer: usize,
    /// The source hook (the target hook is the same kind at `target_layer`).
    pub hook: String,
    /// `none`, `scale`, `cfg`, `sae` or `probe`.
    pub amplifier: String,
    /// How the variant reads in reports, e.g. `scale 6`, `cfg 2 (null: bos)`, `sae dog ×8`.
    pub label: String,
    /// α, s or c; none for `none`.
    pub value: Option<f32>,
    /// The feature amplified (`sae` and `probe`).
    pub feature: Option<String>,
    /// The null prompt's name (`cfg`).
    pub null: Option<String>,
    /// The generated text (new tokens only).
    pub generation: String,
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// Cosine similarity of the source prompt's and the generation's sentence embeddings.
    pub score: f32,
    /// Named concept words of the feature found in the generation.
    pub concept_hits: Vec<String>,
    /// Concept scores: the cosine similarity of the generation's embedding to each described
    /// feature's description, by feature name (every record of the run, so that plain patching
    /// gives each feature's baseline).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub concept_scores: std::collections::BTreeMap<String, f32>,
    /// The answers an attribute-extraction task accepts for this source (empty for other tasks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    /// Whether the generation contains one of `answers` (ignoring case); `None` without answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_found: Option<bool>,
    /// The source model's own most likely next token at the source position.
    pub source_next_token: String,
    /// The patched target's most likely first token.
    pub patched_next_token: String,
    /// Whether `patched_next_token` is `source_next_token` (Patchscopes' precision@1).
    pub next_token_match: bool,
    /// `−ln p(source_next_token)` under the patched target's first-token distribution, in nats.
    pub surprisal: f32,
    /// Fluency: the mean surprisal (nats per token) of the generated tokens under the unpatched
    /// model reading the target prompt and then the generation; lower is more fluent. `None` when
    /// not judged (`judge.fluency = false`, a results file from before this judge, or an empty
    /// generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fluency: Option<f32>,
    /// ‖h‖ and ‖h'‖.
    pub norm: f32,
    /// ‖h'‖, after amplification.
    pub amplified_norm: f32,
}

impl ScopeRecord {
    /// What identifies this record within a run (see [`RecordKey`]).
    pub fn key(&self) -> RecordKey {
        (self.source.clone(), self.layer, self.label.clone())
    }
}

/// What identifies a result within a run: source prompt, source layer, amplifier label.
pub type RecordKey = (String, usize, String);

/// `results.jsonl` of records `T`: read what is there, then append.
pub struct ResultsFile<T> {
    path: PathBuf,
    file: File,
    records: std::marker::PhantomData<T>,
}

impl<T: Serialize + DeserializeOwned> ResultsFile<T> {
    /// Opens (or creates) the results file, returning the records already in it. A last line cut
    /// short by an interruption is dropped (the file is rewritten without it, atomically).
    pub fn open(path: &Path) -> Result<(Self, Vec<T>)> {
        let io = |e: std::io::Error| Error::file(path, e);
        let mut records = Vec::new();
        let mut dropped = false;
        if path.exists() {
            let reader = BufReader::new(File::open(path).map_err(io)?);
            let lines: Vec<String> = reader.lines().collect::<std::io::Result<_>>().map_err(io)?;
            let n = lines.len();
            for (i, line) in lines.iter().enumerate() {
                match serde_json::from_str::<T>(line) {
                    Ok(record) => records.push(record),
                    Err(_) if i + 1 == n => dropped = true,
                    Err(e) => {
                        return Err(Error::config(
                            &path.display().to_string(),
                            format!(
                                "line {} is not a result of this kind of run ({e}); move the file away to start over",
                                i + 1
                            ),
                        ))
                    }
                }
            }
        }
        if dropped {
            let tmp = path.with_extension("jsonl.tmp");
            let mut out = File::create(&tmp).map_err(io)?;
            for record in &records {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(record).expect("records serialize")
                )
                .map_err(io)?;
            }
            out.sync_all().map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok((
            ResultsFile {
                path: path.to_path_buf(),
                file,
                records: std::marker::PhantomData,
            },
            records,
        ))
    }

    /// Appends records as whole lines and flushes them to disk.
    pub fn append(&mut self, records: &[T]) -> Result<()> {
        let mut text = String::new();
        for record in records {
            text.push_str(&serde_json::to_string(record).expect("records serialize"));
            text.push('\n');
        }
        let io = |e: std::io::Error| Error::file(&self.path, e);
        self.file.write_all(text.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

/// The keys of records already done.
pub fn done_keys(records: &[ScopeRecord]) -> HashSet<RecordKey> {
    records.iter().map(ScopeRecord::key).collect()
}

/// Reads every record of a scope run's results file.
pub fn read_results(path: &Path) -> Result<Vec<ScopeRecord>> {
    read_records(path)
}

/// Reads every record of a results file of records `T`.
pub fn read_records<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| Error::config(&path.display().to_string(), format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Results in `out` are only reused by a run that would have produced them: `run.json` records
/// `identity` (what the results depend on: model, prompts, settings), and a run whose identity
/// differs from the recorded one is refused rather than mixed into the same results.
pub fn check_run_identity(out: &Path, identity: serde_json::Value) -> Result<()> {
    let path = out.join("run.json");
    if path.exists() && out.join("results.jsonl").exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
        let previous: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::config(&path.display().to_string(), e))?;
        if previous != identity {
            return Err(Error::config(
                "out",
                format!(
                    "{} holds results of a different run ({}, now {}); choose another out directory, or delete it to start over",
                    out.display(),
                    previous,
                    identity
                ),
            ));
        }
        return Ok(());
    }
    let json = serde_json::to_string_pretty(&identity).expect("a run identity serializes");
    Ok(loupe_util::write_atomically(&path, json.as_bytes())?)
}

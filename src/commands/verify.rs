//! `loupe verify DIR...`: says, file by file, whether stores and run directories are as they
//! were written. Every check is the one the readers make before use, run over everything.

use std::path::{Path, PathBuf};

use loupe_data::reader::Store;
use loupe_sae::{saelens, Checkpoint};
use loupe_util::SafetensorsFile;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Activation stores, SAE, probe or scope run directories, or single files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// What one check found.
enum Finding {
    Ok(String),
    /// Readable, but carries nothing to check it against.
    Unchecked(String),
    Damaged(String),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut findings: Vec<(PathBuf, Finding)> = Vec::new();
    for path in &args.paths {
        anyhow::ensure!(path.exists(), "{}: no such file or directory", path.display());
        check_path(path, &mut findings);
    }
    let (mut ok, mut unchecked, mut damaged) = (0, 0, 0);
    for (path, finding) in &findings {
        match finding {
            Finding::Ok(detail) => {
                ok += 1;
                println!("ok         {} ({detail})", path.display());
            }
            Finding::Unchecked(why) => {
                unchecked += 1;
                println!("unchecked  {}: {why}", path.display());
            }
            Finding::Damaged(why) => {
                damaged += 1;
                println!("DAMAGED    {}: {why}", path.display());
            }
        }
    }
    println!(
        "{} checked: {ok} ok, {damaged} damaged, {unchecked} without a checksum",
        findings.len()
    );
    anyhow::ensure!(damaged == 0, "{damaged} damaged (listed above)");
    Ok(())
}

fn check_path(path: &Path, findings: &mut Vec<(PathBuf, Finding)>) {
    if path.is_file() {
        check_file(path, findings);
        return;
    }
    if path.join(loupe_data::store::MANIFEST).is_file() {
        check_store(path, findings);
        return;
    }
    if path.join(saelens::CFG_FILE).is_file() && path.join(saelens::WEIGHTS_FILE).is_file() {
        let finding = match saelens::load(path) {
            Ok(sae) => Finding::Ok(format!("SAE {} → {} loads", sae.d_in, sae.d_sae)),
            Err(e) => Finding::Damaged(format!("{e}")),
        };
        findings.push((path.join(saelens::WEIGHTS_FILE), finding));
    }
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            findings.push((path.to_path_buf(), Finding::Damaged(format!("cannot list: {e}"))));
            return;
        }
    };
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            check_path(&entry, findings);
        } else if entry.file_name().is_some_and(|n| n != saelens::WEIGHTS_FILE) {
            check_file(&entry, findings);
        }
    }
}

fn check_file(path: &Path, findings: &mut Vec<(PathBuf, Finding)>) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let extension = path.extension().map(|x| x.to_string_lossy().to_string());
    let finding = if name == loupe_sae::CHECKPOINT_FILE {
        match Checkpoint::load(path.parent().unwrap_or(Path::new("."))) {
            Ok(Some(c)) => Finding::Ok(format!("trainer checkpoint at step {}, checksum ok", c.info.step)),
            Ok(None) => return,
            Err(e) => Finding::Damaged(format!("{e}")),
        }
    } else {
        match extension.as_deref() {
            Some("safetensors") => match SafetensorsFile::open(path) {
                Ok(file) if file.digest().is_some() => Finding::Ok("checksum ok".into()),
                Ok(_) => Finding::Unchecked(
                    "no checksum recorded (written by another tool or an older loupe)".into(),
                ),
                Err(e) => Finding::Damaged(format!("{e}")),
            },
            Some("json") => match parse_json(path) {
                Ok(()) => Finding::Ok("valid JSON".into()),
                Err(e) => Finding::Damaged(e),
            },
            Some("jsonl") => check_jsonl(path),
            _ => return, // reports, event files, configs: nothing is recorded to check them against
        }
    };
    findings.push((path.to_path_buf(), finding));
}

fn parse_json(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| format!("not valid JSON: {e}"))?;
    Ok(())
}

/// A JSON-lines results file: every line parses, except perhaps a last one a kill cut short
/// (the run that resumes drops it).
fn check_jsonl(path: &Path) -> Finding {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return Finding::Damaged(format!("cannot read: {e}")),
    };
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if serde_json::from_str::<serde_json::Value>(line).is_err() {
            let last = i + 1 == lines.len() && !text.ends_with('\n');
            return if last {
                Finding::Unchecked(format!(
                    "line {} was cut short by a killed run; the next run drops it",
                    i + 1
                ))
            } else {
                Finding::Damaged(format!("line {} is not valid JSON", i + 1))
            };
        }
    }
    Finding::Ok(format!("{} records", lines.len()))
}

/// A store: the manifest, then every shard as a reader reads it (length and checksum against the
/// manifest, tensor shapes, finite activations), then files the manifest does not list.
fn check_store(dir: &Path, findings: &mut Vec<(PathBuf, Finding)>) {
    let manifest_path = dir.join(loupe_data::store::MANIFEST);
    let store = match Store::open(dir) {
        Ok(store) => store,
        Err(e) => {
            findings.push((manifest_path, Finding::Damaged(format!("{e}"))));
            return;
        }
    };
    let m = &store.manifest;
    findings.push((
        manifest_path,
        Finding::Ok(format!(
            "{} tokens in {} shards{}",
            m.tokens,
            m.shards.len(),
            if m.complete { "" } else { ", capture not finished" }
        )),
    ));
    for (index, shard) in m.shards.iter().enumerate() {
        let path = dir.join(&shard.file);
        let checked = m
            .hooks
            .iter()
            .try_for_each(|h| store.read_shard(index, h.name).map(|_| ()));
        let finding = match (checked, &shard.xxh3) {
            (Err(e), _) => Finding::Damaged(format!("{e}")),
            (Ok(()), Some(_)) => Finding::Ok(format!("{} rows, checksum ok, all finite", shard.tokens)),
            (Ok(()), None) => Finding::Unchecked(format!(
                "{} rows, all finite; the manifest records no checksum (an older store)",
                shard.tokens
            )),
        };
        findings.push((path, finding));
    }
    let listed: Vec<&str> = m.shards.iter().map(|s| s.file.as_str()).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut strays: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                name.starts_with("shard-") && !listed.contains(&name.as_str())
            })
            .collect();
        strays.sort();
        for stray in strays {
            findings.push((
                stray,
                Finding::Unchecked(
                    "not listed in the manifest: readers ignore it (left by an interrupted capture)".into(),
                ),
            ));
        }
    }
}

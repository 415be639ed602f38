//! The feature books whose entries the playground offers (`loupe serve --features FILE`): read once
//! at start, so that a book that cannot be read stops the server with its file named, and so that
//! requests name entries, never files.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};

/// Fields of a feature book entry that name a file.
const PATH_FIELDS: [&str; 3] = ["probe", "sae", "file"];

/// Every entry of the given books, each with the book it came from.
#[derive(Default)]
pub struct FeatureBooks {
    entries: Vec<(PathBuf, Value)>,
}

impl FeatureBooks {
    /// Reads `books`; an error names the book and what is wrong with it.
    pub fn read(books: &[PathBuf]) -> Result<FeatureBooks, String> {
        let mut entries: Vec<(PathBuf, Value)> = Vec::new();
        for book in books {
            let text = std::fs::read_to_string(book).map_err(|e| format!("{}: {e}", book.display()))?;
            let parsed: toml::Value =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", book.display()))?;
            let parsed = serde_json::to_value(parsed).map_err(|e| format!("{}: {e}", book.display()))?;
            let Some(features) = parsed["feature"].as_array() else {
                return Err(format!(
                    "{}: no [[feature]] entries; is it a feature book?",
                    book.display()
                ));
            };
            for entry in features {
                let name = entry["name"]
                    .as_str()
                    .ok_or_else(|| format!("{}: a [[feature]] without a name", book.display()))?;
                if let Some((other, _)) = entries.iter().find(|(_, e)| e["name"] == json!(name)) {
                    return Err(format!(
                        "{}: feature '{name}' is also in {}; names must be unique across the books served",
                        book.display(),
                        other.display()
                    ));
                }
                entries.push((book.clone(), with_resolved_paths(entry, book)));
            }
        }
        Ok(FeatureBooks { entries })
    }

    /// What the playground lists: each entry's name, kind, book and concept words.
    pub fn summaries(&self) -> Vec<Value> {
        self.entries
            .iter()
            .map(|(book, e)| {
                json!({
                    "name": e["name"],
                    "kind": e["kind"],
                    "book": book.display().to_string(),
                    "concepts": e["concepts"],
                })
            })
            .collect()
    }

    /// The entry named `name`, as a feature book entry whose paths read from any folder.
    pub fn entry(&self, name: &str) -> ApiResult<Value> {
        self.entries
            .iter()
            .find(|(_, e)| e["name"] == json!(name))
            .map(|(_, e)| e.clone())
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no feature '{name}' in the server's feature books (GET /api/playground/options lists them; \
                     start the server with --features FILE to add a book)"
                ))
            })
    }
}

/// The entry with its file paths resolved as the book resolves them (`loupe_scope::features::locate`),
/// so that they read from the job's own copy of the entry.
fn with_resolved_paths(entry: &Value, book: &Path) -> Value {
    let mut entry = entry.clone();
    let base = book.parent().unwrap_or(Path::new("."));
    for field in PATH_FIELDS {
        if let Some(path) = entry[field].as_str().map(PathBuf::from) {
            entry[field] = json!(loupe_scope::features::locate(&path, base));
        }
    }
    entry
}

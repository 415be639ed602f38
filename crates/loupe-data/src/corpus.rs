//! Reading documents: plain text files (one document each), directories of them, and JSONL files
//! (one document per line, a configurable text field, label fields, and labelled character spans).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use loupe_util::Problems as _;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One source of documents, as a capture config names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    /// A `.jsonl` file, a text file, or a directory of them. A leading `~/` or `$LOUPE_HOME/` is
    /// expanded (`$LOUPE_HOME/data` is where `scripts/fetch-data` puts the fetched corpora).
    pub path: String,
    /// JSONL: the field that holds the text.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// JSONL: document-level label fields carried to every token (`lang`, `source`, ...).
    #[serde(default)]
    pub labels: Vec<String>,
    /// JSONL: a field with labelled character spans, `[{"start": 0, "end": 5, "label": "quote"}]`,
    /// that become token-level labels (stored under this field's name).
    #[serde(default)]
    pub spans: Option<String>,
    /// JSONL: keep only documents whose field has one of the listed values, for example
    /// `only = { lang = ["de", "es"] }` (to draw one language from a multilingual file).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub only: BTreeMap<String, Vec<String>>,
}

fn default_text_field() -> String {
    "text".into()
}

/// A labelled character span of a document's text: `[start, end)` in characters.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Span {
    /// First character of the span (0-based, counted in `char`s, not bytes).
    pub start: usize,
    /// One past its last character (exclusive).
    pub end: usize,
    /// The label value the span's tokens get, e.g. `quote`.
    pub label: String,
}

/// One document with its labels.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Document {
    /// The document's text, as read from the file or the JSONL text field.
    pub text: String,
    /// Document-level labels by field name.
    pub labels: BTreeMap<String, String>,
    /// Labelled character spans of `text`, from the JSONL span field (empty when there is none).
    pub spans: Vec<Span>,
}

/// Expands `~/` and `$LOUPE_HOME/` at the start of a path.
pub fn expand_path(path: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    if let Some(rest) = path.strip_prefix("$LOUPE_HOME/") {
        let loupe_home = std::env::var_os("LOUPE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".cache/loupe"));
        return loupe_home.join(rest);
    }
    if let Some(rest) = path.strip_prefix("~/") {
        return home().join(rest);
    }
    PathBuf::from(path)
}

impl CorpusSpec {
    /// The files this corpus reads, in order: the path itself, or a directory's `.txt` and
    /// `.jsonl` files sorted by name.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let path = expand_path(&self.path);
        if path.is_file() {
            return Ok(vec![path]);
        }
        if !path.is_dir() {
            return Err(Error::file(
                &path,
                "corpus not found (fetched corpora come from scripts/fetch-data)",
            ));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| Error::file(&path, format!("cannot list: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt" || x == "jsonl"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::file(
                &path,
                "the corpus directory has no .txt or .jsonl files",
            ));
        }
        Ok(files)
    }

    /// Streams the documents of this corpus, one file after another, never holding more than one
    /// document in memory.
    pub fn documents(&self) -> Result<impl Iterator<Item = Result<Document>>> {
        let spec = self.clone();
        let files = self.files()?;
        Ok(files
            .into_iter()
            .flat_map(move |file| -> Box<dyn Iterator<Item = Result<Document>>> {
                match read_file(&file, &spec) {
                    Ok(docs) => docs,
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            }))
    }
}

fn read_file(path: &Path, spec: &CorpusSpec) -> Result<Box<dyn Iterator<Item = Result<Document>>>> {
    if path.extension().is_some_and(|x| x == "jsonl") {
        let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        let path = path.to_path_buf();
        let spec = spec.clone();
        let lines = BufReader::new(file).lines().enumerate();
        let docs = lines.filter_map(move |(i, line)| {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    return Some(Err(Error::file(
                        &path,
                        format!("line {}: cannot read: {e}", i + 1),
                    )))
                }
            };
            if line.trim().is_empty() {
                return None;
            }
            parse_json_line(&line, &spec)
                .map_err(|m| Error::file(&path, format!("line {}: {m}", i + 1)))
                .transpose()
        });
        return Ok(Box::new(docs));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read as UTF-8 text: {e}")))?;
    Ok(Box::new(std::iter::once(Ok(Document {
        text,
        ..Default::default()
    }))))
}

/// One JSONL line as a document; `None` when the corpus's `only` filter leaves it out.
fn parse_json_line(line: &str, spec: &CorpusSpec) -> std::result::Result<Option<Document>, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    for (field, wanted) in &spec.only {
        let value = match object.get(field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => {
                return Err(format!(
                    "no field '{field}', which the corpus's `only` filter names"
                ))
            }
            Some(other) => other.to_string(),
        };
        if !wanted.contains(&value) {
            return Ok(None);
        }
    }
    let text = match object.get(&spec.text_field) {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(_) => return Err(format!("the text field '{}' is not a string", spec.text_field)),
        None => {
            return Err(format!(
                "no text field '{}' (set text_field to the field that holds the text; this line has {})",
                spec.text_field,
                object.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        }
    };
    let mut labels = BTreeMap::new();
    for field in &spec.labels {
        let label = match object.get(field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => return Err(format!("no label field '{field}'")),
            Some(other) => other.to_string(),
        };
        labels.insert(field.clone(), label);
    }
    let spans = match &spec.spans {
        Some(field) => match object.get(field) {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("span field '{field}': {e}"))?,
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    Ok(Some(Document { text, labels, spans }))
}

/// Streams the documents of several corpora, taking one document from each in turn (so that a
/// capture cut short by a token budget still sees every corpus), until all are exhausted.
pub fn interleave(specs: &[CorpusSpec]) -> Result<impl Iterator<Item = Result<Document>>> {
    let mut sources = specs
        .iter()
        .map(|s| s.documents().map(|d| Box::new(d) as Box<dyn Iterator<Item = _>>))
        .collect::<Result<Vec<_>>>()?;
    let mut next = 0;
    Ok(std::iter::from_fn(move || {
        while !sources.is_empty() {
            let i = next % sources.len();
            match sources[i].next() {
                Some(doc) => {
                    next = i + 1;
                    return Some(doc);
                }
                None => {
                    drop(sources.remove(i));
                    next = i;
                }
            }
        }
        None
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &Path) -> CorpusSpec {
        CorpusSpec {
            path: path.to_str().unwrap().into(),
            text_field: "text".into(),
            labels: vec!["lang".into()],
            spans: Some("spans".into()),
            only: BTreeMap::new(),
        }
    }

    #[test]
    fn only_keeps_the_documents_with_a_listed_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(
            &path,
            "{\"text\": \"a\", \"lang\": \"de\"}\n{\"text\": \"b\", \"lang\": \"en\"}\n{\"text\": \"c\", \"lang\": \"es\"}\n",
        )
        .unwrap();
        let spec = CorpusSpec {
            only: BTreeMap::from([("lang".to_string(), vec!["de".to_string(), "es".to_string()])]),
            ..spec(&path)
        };
        let texts: Vec<String> = spec.documents().unwrap().map(|d| d.unwrap().text).collect();
        assert_eq!(texts, vec!["a", "c"]);
    }

    #[test]
    fn jsonl_documents_labels_and_spans() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(&path, "{\"text\": \"Hallo Welt\", \"lang\": \"de\"}\n\n{\"text\": \"He said \\\"hi\\\"\", \"lang\": \"en\", \"spans\": [{\"start\": 8, \"end\": 12, \"label\": \"quote\"}]}\n").unwrap();
        let docs: Vec<Document> = spec(&path).documents().unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].labels["lang"], "de");
        assert_eq!(
            docs[1].spans,
            vec![Span {
                start: 8,
                end: 12,
                label: "quote".into()
            }]
        );
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(
            &path,
            "{\"text\": \"ok\", \"lang\": \"en\"}\nnot json\n{\"body\": \"x\", \"lang\": \"en\"}\n",
        )
        .unwrap();
        let results: Vec<Result<Document>> = spec(&path).documents().unwrap().collect();
        let second = results[1].as_ref().unwrap_err().to_string();
        assert!(
            second.contains("bad.jsonl") && second.contains("line 2") && second.contains("not JSON"),
            "{second}"
        );
        let third = results[2].as_ref().unwrap_err().to_string();
        assert!(
            third.contains("line 3") && third.contains("no text field 'text'") && third.contains("body"),
            "{third}"
        );
    }

    #[test]
    fn interleaving_takes_turns_until_every_corpus_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        std::fs::write(&a, "{\"text\": \"a1\"}\n{\"text\": \"a2\"}\n{\"text\": \"a3\"}\n").unwrap();
        std::fs::write(&b, "{\"text\": \"b1\"}\n").unwrap();
        let specs: Vec<CorpusSpec> = [&a, &b]
            .iter()
            .map(|p| CorpusSpec {
                labels: vec![],
                spans: None,
                ..spec(p)
            })
            .collect();
        let texts: Vec<String> = interleave(&specs).unwrap().map(|d| d.unwrap().text).collect();
        assert_eq!(texts, vec!["a1", "b1", "a2", "a3"]);
    }
}

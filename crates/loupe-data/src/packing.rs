//! Tokenizing documents and packing them into fixed-length contexts. Every context starts with the
//! separator token (for SmolLM2 `<|endoftext|>`, which stands in for a BOS it does not have), and
//! documents follow one another with a separator between them; a long document continues in the
//! next context. Each token carries its document's index and its labels.

use std::collections::VecDeque;

use loupe_model::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::corpus::Document;
use crate::Result;

/// Label id of a token that has no value for a label field (separators, unlabelled spans).
pub const NO_LABEL: u32 = u32::MAX;
/// Document index of a separator token.
pub const NO_DOC: u32 = u32::MAX;

/// Label values seen so far, per field, in order of first appearance: a token's label is stored as
/// its index here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelVocab {
    /// The label field names: the document label fields, then the span field when there is one.
    pub fields: Vec<String>,
    /// `values[field][id]`: the value that label id `id` of field `field` stands for.
    pub values: Vec<Vec<String>>,
}

impl LabelVocab {
    /// An empty vocabulary for `fields`, with no values seen yet.
    pub fn new(fields: Vec<String>) -> Self {
        let values = vec![Vec::new(); fields.len()];
        LabelVocab { fields, values }
    }

    fn id(&mut self, field: usize, value: &str) -> u32 {
        let values = &mut self.values[field];
        match values.iter().position(|v| v == value) {
            Some(i) => i as u32,
            None => {
                values.push(value.to_string());
                (values.len() - 1) as u32
            }
        }
    }
}

/// One packed context: `tokens[0]` is the separator.
#[derive(Clone, Debug, PartialEq)]
pub struct Context {
    /// Token ids, `context_length` of them (fewer in the last context of a corpus).
    pub tokens: Vec<u32>,
    /// Document index of each token ([`NO_DOC`] for separators).
    pub docs: Vec<u32>,
    /// `labels[field][token]`: label ids ([`NO_LABEL`] where none).
    pub labels: Vec<Vec<u32>>,
}

impl Context {
    /// Whether the token at `i` is a separator rather than document text.
    pub fn is_separator(&self, i: usize) -> bool {
        self.docs[i] == NO_DOC
    }
}

struct Token {
    id: u32,
    doc: u32,
    labels: Vec<u32>,
}

/// Packs a stream of documents into contexts of `context_length` tokens (the last may be shorter).
pub struct Packer<'t, I> {
    documents: I,
    tokenizer: &'t Tokenizer,
    context_length: usize,
    separator: u32,
    /// The document label fields; the span field, when there is one, comes after them.
    doc_fields: Vec<String>,
    has_span_field: bool,
    /// The label values seen so far; token label ids in the yielded contexts index into it.
    pub vocab: LabelVocab,
    pending: VecDeque<Token>,
    documents_read: u32,
    done: bool,
}

impl<'t, I: Iterator<Item = Result<Document>>> Packer<'t, I> {
    /// A packer over `documents` that starts every context and separates documents with token
    /// `separator`. `doc_fields` are the document-level label fields to carry to every token;
    /// `span_field` is the JSONL span field whose labelled spans become token-level labels.
    pub fn new(
        documents: I,
        tokenizer: &'t Tokenizer,
        context_length: usize,
        separator: u32,
        doc_fields: Vec<String>,
        span_field: Option<String>,
    ) -> Self {
        let vocab = LabelVocab::new(doc_fields.iter().chain(&span_field).cloned().collect());
        Packer {
            documents,
            tokenizer,
            context_length,
            separator,
            doc_fields,
            has_span_field: span_field.is_some(),
            vocab,
            pending: VecDeque::new(),
            documents_read: 0,
            done: false,
        }
    }

    /// Tokenizes the next document with text into `pending`, after a separator; false at the end.
    fn read_document(&mut self) -> Result<bool> {
        for document in self.documents.by_ref() {
            let document = document?;
            let (ids, offsets) = self.tokenizer.encode_with_offsets(&document.text)?;
            let doc = self.documents_read;
            self.documents_read += 1;
            if ids.is_empty() {
                continue;
            }
            let n_fields = self.vocab.fields.len();
            self.pending.push_back(Token {
                id: self.separator,
                doc: NO_DOC,
                labels: vec![NO_LABEL; n_fields],
            });
            let doc_labels: Vec<u32> = (0..self.doc_fields.len())
                .map(|f| match document.labels.get(&self.doc_fields[f]) {
                    Some(value) => self.vocab.id(f, value),
                    None => NO_LABEL,
                })
                .collect();
            for (&id, &(start, end)) in ids.iter().zip(&offsets) {
                let mut labels = doc_labels.clone();
                if self.has_span_field {
                    // A token is in a span when their character ranges overlap.
                    let hit = document
                        .spans
                        .iter()
                        .find(|span| start < span.end && end > span.start);
                    labels.push(match hit {
                        Some(span) => self.vocab.id(self.doc_fields.len(), &span.label),
                        None => NO_LABEL,
                    });
                }
                self.pending.push_back(Token { id, doc, labels });
            }
            return Ok(true);
        }
        Ok(false)
    }
}

impl<I: Iterator<Item = Result<Document>>> Iterator for Packer<'_, I> {
    type Item = Result<Context>;

    fn next(&mut self) -> Option<Result<Context>> {
        if self.done {
            return None;
        }
        let n_fields = self.vocab.fields.len();
        let mut context = Context {
            tokens: vec![self.separator],
            docs: vec![NO_DOC],
            labels: vec![vec![NO_LABEL]; n_fields],
        };
        while context.tokens.len() < self.context_length {
            if self.pending.is_empty() {
                match self.read_document() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let token = self.pending.pop_front().expect("a document was just read");
            // The context's own first token already separates it from what came before.
            if token.doc == NO_DOC && context.tokens.len() == 1 {
                continue;
            }
            context.tokens.push(token.id);
            context.docs.push(token.doc);
            for (field, label) in token.labels.into_iter().enumerate() {
                context.labels[field].push(label);
            }
        }
        if context.tokens.len() == 1 {
            self.done = true;
            return None;
        }
        Some(Ok(context))
    }
}

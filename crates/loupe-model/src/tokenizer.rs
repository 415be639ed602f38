//! The model's tokenizer: a `tokenizers::Tokenizer`, read from a `tokenizer.json` or built from
//! the `tokenizer.ggml.*` fields of a GGUF file (so that a GGUF file is all a model needs).

use std::path::Path;

use ahash::AHashMap;
use loupe_util::Problems as _;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use crate::gguf::GgufTokenizerFields;
use crate::{Error, Result};

/// A token's characters in the text it came from: `[start, end)`, in characters.
pub type CharRange = (usize, usize);

/// A tokenizer with the model's special token ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
}

/// A run of tokens and the text they make: see [`Tokenizer::decode_pieces`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextPiece {
    /// The tokens' indices in the decoded ids.
    pub tokens: std::ops::Range<usize>,
    /// Their text.
    pub text: String,
}

/// The pre-tokenizer split of Qwen2's tokenizer.json (llama.cpp's `qwen2` pre-tokenizer).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

// llama.cpp token types that are special tokens rather than pieces of text.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

impl Tokenizer {
    /// Reads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path, bos: Option<u32>, eos: Option<u32>) -> Result<Self> {
        let not_readable =
            |e: &dyn std::fmt::Display| Error::file(path, format!("not a readable tokenizer.json: {e}"));
        let json = std::fs::read_to_string(path).map_err(|e| not_readable(&e))?;
        // tokenizers panics (an `expect` in its decoder deserializer) on some malformed JSON, so
        // the syntax is checked first; a well-formed file's errors are returned as errors.
        serde_json::from_str::<serde::de::IgnoredAny>(&json).map_err(|e| not_readable(&e))?;
        let inner: tokenizers::Tokenizer = json.parse().map_err(|e| not_readable(&e))?;
        Ok(Tokenizer { inner, bos, eos })
    }

    /// Builds the tokenizer that a GGUF file describes. Byte-level BPE (`tokenizer.ggml.model =
    /// gpt2`) with the `gpt2`, `smollm` and `qwen2` pre-tokenizers is supported; for anything else
    /// (such as Gemma's SentencePiece vocabulary), put the model's `tokenizer.json` next to the
    /// GGUF file.
    pub(crate) fn from_gguf(fields: &GgufTokenizerFields, path: &Path) -> Result<Self> {
        let unsupported = |what: String| {
            Error::file(path, format!("{what}; put the model's tokenizer.json next to the GGUF file (named tokenizer.json or <file stem>.tokenizer.json; for a registered model, `scripts/fetch-models NAME` fetches it)"))
        };
        if fields.model != "gpt2" {
            return Err(unsupported(format!(
                "tokenizer.ggml.model '{}' cannot be built from GGUF yet",
                fields.model
            )));
        }
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match fields.pre.as_deref() {
            None | Some("default") | Some("gpt2") => byte_level.into(),
            // SmolLM's: digits one by one, then the GPT-2 byte-level split.
            Some("smollm") => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            // Qwen2's: its own split (digits one by one, no space before letters kept apart from
            // punctuation), then the byte-level mapping without GPT-2's split.
            Some("qwen2") => {
                let split = Split::new(
                    SplitPattern::Regex(QWEN2_SPLIT.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| unsupported(format!("cannot build the qwen2 pre-tokenizer ({e})")))?;
                Sequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()]).into()
            }
            Some(other) => {
                return Err(unsupported(format!(
                    "pre-tokenizer '{other}' cannot be built from GGUF yet"
                )))
            }
        };

        let vocab: AHashMap<String, u32> = fields
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = fields
            .merges
            .iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::file(
                    path,
                    "tokenizer.ggml.merges has an entry that is not two tokens separated by a space",
                )
            })?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| Error::file(path, format!("cannot build the BPE tokenizer: {e}")))?;

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = fields
            .token_types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            // A corrupt file may list more types than tokens; those types name no token.
            .filter_map(|(i, _)| fields.tokens.get(i))
            .map(|token| AddedToken::from(token.clone(), true))
            .collect();
        inner.add_special_tokens(&special);
        if fields.add_bos {
            let bos = fields.bos.ok_or_else(|| {
                Error::file(
                    path,
                    "tokenizer.ggml.add_bos_token is set but there is no tokenizer.ggml.bos_token_id",
                )
            })?;
            let bos_token = fields
                .tokens
                .get(bos as usize)
                .cloned()
                .ok_or_else(|| Error::file(path, "tokenizer.ggml.bos_token_id is past the vocabulary"))?;
            let template = TemplateProcessing::builder()
                .try_single(format!("{bos_token} $A"))
                .and_then(|b| {
                    b.special_tokens(vec![(bos_token.clone(), bos)])
                        .build()
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| Error::file(path, format!("cannot set up BOS insertion: {e}")))?;
            inner.with_post_processor(Some(template));
        }
        Ok(Tokenizer {
            inner,
            bos: fields.bos,
            eos: fields.eos,
        })
    }

    /// Token ids of `text`, with the model's own special tokens added (for SmolLM2, none: its
    /// tokenizer adds no BOS). Special tokens written in the text (`<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of `text` with each token's character range `[start, end)` in `text` (character
    /// offsets, not bytes), for lining tokens up with labelled spans.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<CharRange>)> {
        let encoding = self
            .inner
            .encode_char_offsets(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok((encoding.get_ids().to_vec(), encoding.get_offsets().to_vec()))
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The text of `ids` cut into pieces that each read as whole characters: one piece per token,
    /// except that tokens which only make a character together (the byte tokens of a multi-byte
    /// character, such as the three of "日") form one piece. This is how token-by-token displays
    /// show "日本" instead of "������". Each piece's text is what its tokens add to the text of
    /// the tokens before it, so spaces fall where the whole text has them.
    pub fn decode_pieces(&self, ids: &[u32]) -> Result<Vec<TextPiece>> {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut decoded_before = String::new();
        for end in 1..=ids.len() {
            let decoded = self.decode(&ids[..end])?;
            // A piece that ends inside a character decodes with a trailing replacement character;
            // the next token completes it (at the end of `ids` it stays as it is).
            if decoded.ends_with('\u{FFFD}') && end < ids.len() {
                continue;
            }
            let text = match decoded.strip_prefix(decoded_before.as_str()) {
                Some(added) => added.to_string(),
                // A decoder that rewrites earlier text (none of loupe's do): the piece alone.
                None => self.decode(&ids[start..end])?,
            };
            pieces.push(TextPiece {
                tokens: start..end,
                text,
            });
            start = end;
            decoded_before = decoded;
        }
        Ok(pieces)
    }

    /// How one token reads on its own (for tables of tokens).
    pub fn token_text(&self, id: u32) -> String {
        self.decode(&[id]).unwrap_or_else(|_| format!("<{id}>"))
    }

    /// The beginning-of-sequence token id, when the model has one (SmolLM2 has none).
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token id, when known; generation stops on it.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Tokens in the vocabulary, added special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token`, written as the vocabulary writes it (e.g. `<|endoftext|>`), if it is one.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer, for offsets and everything else.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

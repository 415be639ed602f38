use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use loupe_util::Problems as _;

use crate::{gguf, Batch, Error, Llama, LlamaConfig, ModelSource, Result, Tokenizer};

/// A loaded model: the hooked network and its tokenizer.
pub struct Model {
    /// The network, with hook points.
    pub llama: Llama,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The name it was loaded by.
    pub name: String,
    /// Where the weights and tokenizer were read from.
    pub source: ModelSource,
    /// The model's Jinja chat template (from the GGUF metadata or `tokenizer_config.json`).
    pub chat_template: Option<String>,
}

impl Model {
    /// Loads a model by name (see [`ModelSource::resolve`]), weights dequantized to f32.
    pub fn load(name: &str, device: &Device) -> Result<Self> {
        let source = ModelSource::resolve(name)?;
        let (llama, tokenizer, chat_template) = match &source {
            ModelSource::Gguf { path, tokenizer_json } => {
                let file = gguf::read(path, device)?;
                let tokenizer = match tokenizer_json {
                    Some(json) => Tokenizer::from_file(json, file.tokenizer.bos, file.tokenizer.eos)?,
                    None => Tokenizer::from_gguf(&file.tokenizer, path)?,
                };
                let vb = VarBuilder::from_tensors(file.tensors, DType::F32, device);
                let llama = Llama::load(vb, file.config).map_err(|e| Error::file(path, e))?;
                (llama, tokenizer, file.tokenizer.chat_template)
            }
            ModelSource::HfDir { dir } => {
                let (llama, tokenizer) = load_hf_dir(dir, device)?;
                (llama, tokenizer, hf_chat_template(dir))
            }
        };
        Ok(Model {
            llama,
            tokenizer,
            name: name.to_string(),
            source,
            chat_template,
        })
    }

    /// A conversation as the model's chat template lays it out, ending with the prompt for the
    /// assistant's turn (as Hugging Face's `apply_chat_template(..., add_generation_prompt=True)`).
    /// `messages` are (role, content) pairs: `("system", ...)`, `("user", ...)`, `("assistant", ...)`.
    pub fn chat_prompt(&self, messages: &[(&str, &str)]) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            Error::Invalid(format!(
                "{} has no chat template; give the prompt as plain text",
                self.name
            ))
        })?;
        let token = |id: Option<u32>| id.map(|id| self.tokenizer.token_text(id)).unwrap_or_default();
        let messages: Vec<_> = messages
            .iter()
            .map(|(role, content)| minijinja::context! { role => role, content => content })
            .collect();
        let mut env = minijinja::Environment::new();
        // HF templates call Python string methods (.strip(), .startswith(), ...).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_template("chat", template)
            .map_err(|e| Error::Invalid(format!("{}'s chat template does not parse: {e}", self.name)))?;
        let context = minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => token(self.tokenizer.bos()),
            eos_token => token(self.tokenizer.eos()),
        };
        env.get_template("chat")
            .and_then(|t| t.render(context))
            .map_err(|e| Error::Invalid(format!("rendering {}'s chat template: {e}", self.name)))
    }

    /// Tokens that end a generation: the tokenizer's EOS, and for chat models the end-of-turn
    /// marker `<|im_end|>` when the vocabulary has one.
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut stops: Vec<u32> = self.tokenizer.eos().into_iter().collect();
        for marker in ["<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>"] {
            if let Some(id) = self.tokenizer.token_to_id(marker) {
                if !stops.contains(&id) {
                    stops.push(id);
                }
            }
        }
        stops
    }

    /// Tokenizes `prompts` and lays them out as one left-padded batch, checking each against the
    /// context length.
    pub fn batch<S: AsRef<str>>(&self, prompts: &[S]) -> Result<Batch> {
        let sequences = prompts
            .iter()
            .map(|p| self.encode_prompt(p.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Batch::left_padded(&sequences, self.pad_id(), self.llama.device())
    }

    /// Token ids of one prompt; an error if it is empty or longer than the context.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let ids = self.tokenizer.encode(prompt)?;
        if ids.is_empty() {
            return Err(Error::Invalid(
                "the prompt is empty: give at least one token of text".into(),
            ));
        }
        let context = self.llama.config().max_position_embeddings;
        if ids.len() > context {
            return Err(Error::TooLong {
                what: "the prompt".into(),
                len: ids.len(),
                context,
            });
        }
        Ok(ids)
    }

    /// The id used for padding (masked out, so any id would do).
    pub fn pad_id(&self) -> u32 {
        self.tokenizer.eos().unwrap_or(0)
    }
}

/// The chat template in a model directory's `tokenizer_config.json`: a string, or a list of named
/// templates of which the `default` one is used.
fn hf_chat_template(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    match &config["chat_template"] {
        serde_json::Value::String(template) => Some(template.clone()),
        serde_json::Value::Array(named) => named
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn load_hf_dir(dir: &Path, device: &Device) -> Result<(Llama, Tokenizer)> {
    let config_path = dir.join("config.json");
    let json = std::fs::read_to_string(&config_path)
        .map_err(|e| Error::file(&config_path, format!("cannot read: {e}")))?;
    let config = LlamaConfig::from_hf_json(&json).map_err(|e| Error::file(&config_path, e))?;
    let ids: serde_json::Value = serde_json::from_str(&json).map_err(|e| Error::file(&config_path, e))?;
    let token_id = |key: &str| match &ids[key] {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
        serde_json::Value::Array(a) => a.first().and_then(|n| n.as_u64()).map(|n| n as u32),
        _ => None,
    };

    let mut weights: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    if weights.is_empty() {
        return Err(Error::file(dir, "has no .safetensors weights"));
    }
    // SAFETY: the files are memory-mapped read-only; loupe does not modify model files while a
    // model is loaded, which is what mmap needs.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&weights, DType::F32, device) }
        .map_err(|e| Error::file(dir, format!("cannot read the safetensors weights: {e}")))?;
    let llama = Llama::load(vb, config).map_err(|e| Error::file(dir, e))?;
    let tokenizer = Tokenizer::from_file(
        &dir.join("tokenizer.json"),
        token_id("bos_token_id"),
        token_id("eos_token_id"),
    )?;
    Ok((llama, tokenizer))
}

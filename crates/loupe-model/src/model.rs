use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use loupe_util::Problems as _;

use crate::gguf::{self, GgufFile};
use crate::layers::{KvCache, Pass};
use crate::network::{ModelSpec, Network, SUPPORTED_FAMILIES};
use crate::{gemma3, gpt2, llama, neox, qwen2};
use crate::{Batch, Error, HookPoint, Hooks, LlamaConfig, ModelSource, Result, Tokenizer};

/// Which logits [`Model::forward`] computes. The unembedding is a fifth of SmolLM2's compute, so
/// generation asks only for the last column. (A pass that needs no logits is [`Model::capture`],
/// which also stops after the deepest hooked layer.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Logits for every column, `[rows, columns, vocab]`.
    All,
    /// Logits for the last column only, `[rows, 1, vocab]` (what generation needs).
    Last,
}

/// A loaded model of any supported family: the hooked network and its tokenizer.
pub struct Model {
    network: Box<dyn Network>,
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
        let (network, tokenizer, chat_template) = match &source {
            ModelSource::Gguf { path, tokenizer_json } => {
                let mut file = gguf::read(path, device)?;
                let tokenizer = match tokenizer_json {
                    Some(json) => Tokenizer::from_file(json, file.tokenizer.bos, file.tokenizer.eos)?,
                    None => Tokenizer::from_gguf(&file.tokenizer, path)?,
                };
                let chat_template = file.tokenizer.chat_template.take();
                (network_from_gguf(file)?, tokenizer, chat_template)
            }
            ModelSource::HfDir { dir } => {
                let (network, tokenizer) = load_hf_dir(dir, device)?;
                (network, tokenizer, hf_chat_template(dir))
            }
        };
        Ok(Model {
            network,
            tokenizer,
            name: name.to_string(),
            source,
            chat_template,
        })
    }

    /// The tokenizer of the model `name` alone, without its weights (a GGUF file's header, or a
    /// model directory's `tokenizer.json`): what commands that work on stored activations need.
    pub fn load_tokenizer(name: &str) -> Result<Tokenizer> {
        match ModelSource::resolve(name)? {
            ModelSource::Gguf { path, tokenizer_json } => {
                let fields = gguf::read_tokenizer_fields(&path)?;
                match tokenizer_json {
                    Some(json) => Tokenizer::from_file(&json, fields.bos, fields.eos),
                    None => Tokenizer::from_gguf(&fields, &path),
                }
            }
            ModelSource::HfDir { dir } => {
                let config_path = dir.join("config.json");
                let json = std::fs::read_to_string(&config_path)
                    .map_err(|e| Error::file(&config_path, format!("cannot read: {e}")))?;
                hf_tokenizer(&dir, &config_path, &json)
            }
        }
    }

    /// The model's shape and family.
    pub fn spec(&self) -> &ModelSpec {
        self.network.spec()
    }

    /// Transformer blocks in the model.
    pub fn n_layers(&self) -> usize {
        self.spec().n_layers
    }

    /// The device the weights live on (CPU or a GPU).
    pub fn device(&self) -> &Device {
        self.network.device()
    }

    /// The model's hook points, in forward order.
    pub fn hook_points(&self) -> Vec<HookPoint> {
        self.spec().hook_points()
    }

    /// The width of one token's activation at `hook` (see [`ModelSpec::width`]).
    pub fn width(&self, hook: HookPoint) -> Result<usize> {
        self.spec().check(hook)?;
        self.spec().width(hook)
    }

    /// Block `layer`'s MLP output projection, `[d_model, d_mlp]`: it maps the neurons
    /// (`mlp.hook_post`) to the MLP's output (`hook_mlp_out`). `None` past the last layer, and
    /// for families that normalise the MLP's output after it (Gemma 3): no linear map then.
    pub fn mlp_out_weight(&self, layer: usize) -> Option<&Tensor> {
        self.network.mlp_out_weight(layer)
    }

    /// Runs the model over `batch`, capturing and intervening as `hooks` says, and returns the
    /// logits asked for: `[rows, columns, vocab]` for [`Logits::All`], `[rows, 1, vocab]` for
    /// [`Logits::Last`] (the last column is every row's last token: batches are left-padded).
    pub fn forward(&self, batch: &Batch, hooks: &mut Hooks, logits: Logits) -> Result<Tensor> {
        let hidden = self.run(batch, hooks, None, Some(self.n_layers() - 1))?;
        self.logits(&hidden, batch, logits)
    }

    /// Runs the model over `batch` only as deep as `hooks` needs, for what they capture (and
    /// change): no logits, and no layer after the deepest hooked one.
    pub fn capture(&self, batch: &Batch, hooks: &mut Hooks) -> Result<()> {
        let Some(deepest) = hooks.deepest_layer() else {
            return Ok(()); // nothing hooked: nothing to run
        };
        self.run(batch, hooks, None, deepest)?;
        Ok(())
    }

    /// [`Model::forward`] with a KV cache: `batch` holds only the columns after those in `cache`
    /// (see [`Batch::next_step`]), whose keys and values are appended to it. Every layer runs.
    pub fn forward_cached(
        &self,
        batch: &Batch,
        hooks: &mut Hooks,
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor> {
        let hidden = self.prefill(batch, hooks, cache)?;
        self.logits(&hidden, batch, logits)
    }

    /// Runs `batch` through every layer into `cache` (a shared prompt prefix, say) and returns
    /// the last layer's residual stream, `[rows, columns, d_model]`, without unembedding it.
    pub fn prefill(&self, batch: &Batch, hooks: &mut Hooks, cache: &mut KvCache) -> Result<Tensor> {
        if cache.columns() != batch.start_column() {
            return Err(Error::Invalid(format!(
                "the KV cache holds {} columns but the batch starts at column {}",
                cache.columns(),
                batch.start_column()
            )));
        }
        if cache.layers.len() != self.n_layers() {
            return Err(Error::Invalid(format!(
                "the KV cache has {} layers but the model has {}: make it with KvCache::new(model.n_layers())",
                cache.layers.len(),
                self.n_layers()
            )));
        }
        self.run(batch, hooks, Some(cache), Some(self.n_layers() - 1))
    }

    /// Final norm and unembedding: logits for residual-stream vectors `[..., d_model]`. Applied to
    /// an intermediate layer's residual stream, this is the logit lens.
    pub fn unembed(&self, resid: &Tensor) -> Result<Tensor> {
        self.network.unembed(resid)
    }

    fn logits(&self, hidden: &Tensor, batch: &Batch, logits: Logits) -> Result<Tensor> {
        match logits {
            Logits::All => self.unembed(hidden),
            Logits::Last => self.unembed(&hidden.narrow(1, batch.columns() - 1, 1)?),
        }
    }

    /// The residual stream after block `last_layer` (`None`: after the embedding alone), with
    /// `hooks` applied on the way.
    fn run(
        &self,
        batch: &Batch,
        hooks: &mut Hooks,
        mut cache: Option<&mut KvCache>,
        last_layer: Option<usize>,
    ) -> Result<Tensor> {
        let spec = self.spec();
        hooks.hook_points().try_for_each(|hook| spec.check(hook))?;
        if batch.max_len() > spec.context {
            return Err(Error::TooLong {
                what: "the input".into(),
                len: batch.max_len(),
                context: spec.context,
            });
        }
        let mut x = self.network.embed(batch, hooks)?;
        if let Some(last_layer) = last_layer {
            let pass = Pass::new(batch, self.network.ropes(), self.network.sliding_window())?;
            for layer in 0..=last_layer {
                let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[layer]);
                x = self.network.block(layer, x, &pass, layer_cache, hooks)?;
            }
        }
        Ok(x)
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
    /// marker (`<|im_end|>`, Gemma's `<end_of_turn>`, ...) when the vocabulary has one.
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut stops: Vec<u32> = self.tokenizer.eos().into_iter().collect();
        for marker in [
            "<|im_end|>",
            "<|endoftext|>",
            "</s>",
            "<|eot_id|>",
            "<end_of_turn>",
        ] {
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
        Batch::left_padded(&sequences, self.pad_id(), self.device())
    }

    /// Token ids of one prompt; an error if it is empty or longer than the context.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let ids = self.tokenizer.encode(prompt)?;
        if ids.is_empty() {
            return Err(Error::Invalid(
                "the prompt is empty: give at least one token of text".into(),
            ));
        }
        let context = self.spec().context;
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

/// The network a GGUF file describes, by its `general.architecture`.
fn network_from_gguf(file: GgufFile) -> Result<Box<dyn Network>> {
    Ok(match file.arch.as_str() {
        "llama" => Box::new(llama::from_gguf(file, "llama")?),
        "qwen2" => Box::new(qwen2::from_gguf(file)?),
        "gemma3" => Box::new(gemma3::from_gguf(file)?),
        other => {
            return Err(file.invalid(format!(
                "architecture '{other}' is not supported; loupe runs {SUPPORTED_FAMILIES}"
            )))
        }
    })
}

fn load_hf_dir(dir: &Path, device: &Device) -> Result<(Box<dyn Network>, Tokenizer)> {
    let config_path = dir.join("config.json");
    let json = std::fs::read_to_string(&config_path)
        .map_err(|e| Error::file(&config_path, format!("cannot read: {e}")))?;
    let ids: serde_json::Value = serde_json::from_str(&json).map_err(|e| Error::file(&config_path, e))?;
    let family = hf_family(&ids).map_err(|e| Error::file(&config_path, e))?;

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
    let config_error = |e: String| Error::file(&config_path, e);
    let network: Box<dyn Network> = match family.as_str() {
        "llama" => {
            let config = LlamaConfig::from_hf_json(&json).map_err(config_error)?;
            Box::new(llama::Llama::load(vb, config, "llama").map_err(|e| Error::file(dir, e))?)
        }
        "qwen2" => {
            let config = qwen2::config_from_hf_json(&json).map_err(config_error)?;
            Box::new(qwen2::load(vb, config).map_err(|e| Error::file(dir, e))?)
        }
        "gpt2" => Box::new(gpt2::from_hf(&json, vb).map_err(|e| Error::file(dir, e))?),
        "gpt_neox" => Box::new(neox::from_hf(&json, vb).map_err(|e| Error::file(dir, e))?),
        _ => unreachable!("hf_family returns supported families only"),
    };
    Ok((network, hf_tokenizer(dir, &config_path, &json)?))
}

/// A model directory's `tokenizer.json`, with the BOS and EOS ids its `config.json` names.
fn hf_tokenizer(dir: &Path, config_path: &Path, config_json: &str) -> Result<Tokenizer> {
    let ids: serde_json::Value =
        serde_json::from_str(config_json).map_err(|e| Error::file(config_path, e))?;
    let token_id = |key: &str| match &ids[key] {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
        serde_json::Value::Array(a) => a.first().and_then(|n| n.as_u64()).map(|n| n as u32),
        _ => None,
    };
    Tokenizer::from_file(
        &dir.join("tokenizer.json"),
        token_id("bos_token_id"),
        token_id("eos_token_id"),
    )
}

/// The family a `config.json` describes (`model_type`, or else `architectures`), or an error
/// naming it and the supported ones.
fn hf_family(config: &serde_json::Value) -> std::result::Result<String, String> {
    let unsupported = |arch: &str| {
        Err(format!(
            "architecture {arch} is not supported; loupe runs {SUPPORTED_FAMILIES} from model \
             directories (Gemma 3 from GGUF files)"
        ))
    };
    if let Some(model_type) = config.get("model_type").and_then(|t| t.as_str()) {
        return match model_type {
            "llama" | "qwen2" | "gpt2" | "gpt_neox" => Ok(model_type.to_string()),
            other => unsupported(other),
        };
    }
    let archs: Vec<&str> = config
        .get("architectures")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|a| a.as_str()).collect())
        .unwrap_or_default();
    let known = [
        ("Llama", "llama"),
        ("Qwen2", "qwen2"),
        ("GPT2", "gpt2"),
        ("GPTNeoX", "gpt_neox"),
    ];
    for arch in &archs {
        if let Some((_, family)) = known.iter().find(|(prefix, _)| arch.starts_with(prefix)) {
            return Ok(family.to_string());
        }
    }
    match archs.is_empty() {
        // Older llama checkpoints name neither; llama's fields are checked when it loads.
        true => Ok("llama".to_string()),
        false => unsupported(&archs.join(", ")),
    }
}

/// Runs `f` on the f32 data of a contiguous f32 CPU tensor, borrowed, without copying it (for
/// loops that candle has no op for: the fused SiLU gate, the SAE kernels, probe datasets).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets())
    else {
        return Err(Error::Invalid(format!(
            "internal: expected a contiguous CPU tensor, got one of shape {:?} on {:?}",
            t.dims(),
            t.device().location()
        )));
    };
    Ok(f(&cpu.as_slice::<f32>()?[start..end]))
}

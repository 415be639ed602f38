//! What the scope tests share: a tiny random-weight model and SAE written by the test, the
//! MiniLM judge (fetched by scripts/fetch-models), a progress reporter that stops like Ctrl-C, and
//! an activation read straight from the model.
#![allow(dead_code)] // each test file uses its own part

use std::cell::Cell;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use loupe_model::{HookPoint, Hooks, Model};
use loupe_scope::judge::embedding::{default_embedder_dir, Embedder};
use loupe_util::Progress;

pub fn tiny_model(dir: &Path) -> Model {
    loupe_model::testing::write_tiny_hf_dir(dir, 7).unwrap();
    Model::load(dir.to_str().unwrap(), &Device::Cpu).unwrap()
}

/// An SAE for the tiny model's `hook` with random weights, saved in `dir`.
pub fn tiny_sae(dir: &Path, hook: &str) -> PathBuf {
    let sae = loupe_sae::testing::random_relu_sae(32, 64, hook, 12345).unwrap();
    let path = dir.join(format!("sae-{hook}"));
    loupe_sae::saelens::save(&sae, &path).unwrap();
    path
}

pub fn embedder() -> Embedder {
    Embedder::load(&default_embedder_dir())
        .unwrap_or_else(|e| panic!("{e}\n(run scripts/fetch-models first)"))
}

/// Stops after `batches` batches, as Ctrl-C would.
pub struct StopAfter {
    pub batches: usize,
    pub seen: Cell<usize>,
}

impl Progress for StopAfter {
    fn advance(&mut self, _: u64) {
        self.seen.set(self.seen.get() + 1);
    }
    fn should_stop(&self) -> bool {
        self.seen.get() >= self.batches
    }
}

/// h at the last token of `prompt`, at `hook`.
pub fn activation(model: &Model, prompt: &str, hook: HookPoint) -> Vec<f32> {
    let batch = model.batch(&[prompt]).unwrap();
    let mut hooks = Hooks::new().capture(hook);
    model.capture(&batch, &mut hooks).unwrap();
    let captured = hooks.captured(hook).unwrap();
    let last = captured.dim(1).unwrap() - 1;
    captured
        .get(0)
        .unwrap()
        .get(last)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

//! Writes the loupe half of the sparsify round-trip fixture: a TopK SAE saved by loupe in
//! sparsify's layout into `tests/fixtures/sparsify/loupe-written/layers.15/`, with the input
//! sparsify is to run it on. Then `scripts/make-sparsify-fixture.py check-loupe` loads it with
//! sparsify and records sparsify's outputs beside it; `tests/sparsify_format.rs` checks loupe
//! against those.
//!
//!     cargo run --release -p loupe-sae --example write-sparsify-fixture

use std::collections::HashMap;
use std::path::Path;

use loupe_sae::sparsify;
use loupe_sae::testing::{fixture_input, fixture_sae};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sparsify/loupe-written/layers.15");
    sparsify::save(&fixture_sae("topk", 300)?, &dir)?;
    let input = HashMap::from([("input".to_string(), fixture_input(301)?)]);
    candle_core::safetensors::save(&input, dir.join("reference-input.safetensors"))?;
    println!("wrote {}", dir.display());
    Ok(())
}

//! Writes the loupe half of the sparsify round-trip fixture: a TopK SAE and a TopK skip
//! transcoder saved by loupe in sparsify's layout into
//! `tests/fixtures/sparsify/loupe-written/{layers.15,layers.3.mlp}/`, each with the input sparsify
//! is to run it on. Then `scripts/make-sparsify-fixture.py check-loupe` loads it with
//! sparsify and records sparsify's outputs beside it; `tests/sparsify_format.rs` checks loupe
//! against those.
//!
//!     cargo run --release -p loupe-sae --example write-sparsify-fixture

use std::collections::HashMap;
use std::path::Path;

use loupe_sae::sparsify;
use loupe_sae::testing::{fixture_input, fixture_sae, fixture_transcoder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sparsify/loupe-written");
    for (name, sae, input_seed) in [
        ("layers.15", fixture_sae("topk", 300)?, 301),
        ("layers.3.mlp", fixture_transcoder("topk", true, 310)?, 311),
    ] {
        let dir = root.join(name);
        sparsify::save(&sae, &dir)?;
        let input = HashMap::from([("input".to_string(), fixture_input(input_seed)?)]);
        candle_core::safetensors::save(&input, dir.join("reference-input.safetensors"))?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}

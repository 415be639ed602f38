//! Writes the loupe half of the SAELens round-trip fixture: one SAE per inference architecture,
//! and the transcoders SAELens has classes for (ReLU with a skip term, JumpReLU), saved by loupe
//! into `tests/fixtures/saelens/loupe-written/<kind>/` with the input SAELens is to run them on. Then `scripts/make-saelens-fixture.py check-loupe` loads each with SAELens and
//! records SAELens's outputs beside it; `tests/saelens_format.rs` checks loupe against those.
//!
//!     cargo run --release -p loupe-sae --example write-saelens-fixture

use std::collections::HashMap;
use std::path::Path;

use loupe_sae::saelens;
use loupe_sae::testing::{fixture_input, fixture_sae, fixture_transcoder};

/// The transcoders written: kind, skip term, directory.
const TRANSCODERS: [(&str, bool, &str); 2] = [
    ("relu", true, "skip-transcoder"),
    ("jumprelu", false, "jumprelu-transcoder"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/saelens/loupe-written");
    for (i, kind) in ["relu", "topk", "jumprelu", "matryoshka"].iter().enumerate() {
        let dir = root.join(kind);
        saelens::save(&fixture_sae(kind, 100 + i as u64)?, &dir)?;
        let input = HashMap::from([("input".to_string(), fixture_input(200 + i as u64)?)]);
        candle_core::safetensors::save(&input, dir.join("reference-input.safetensors"))?;
        println!("wrote {}", dir.display());
    }
    for (i, (kind, skip, name)) in TRANSCODERS.iter().enumerate() {
        let dir = root.join(name);
        saelens::save(&fixture_transcoder(kind, *skip, 110 + i as u64)?, &dir)?;
        let input = HashMap::from([("input".to_string(), fixture_input(210 + i as u64)?)]);
        candle_core::safetensors::save(&input, dir.join("reference-input.safetensors"))?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}

//! Property tests: real store, checkpoint and SAE files, damaged thousands of ways (flipped bytes,
//! truncations, counts and lengths set huge), must each be refused with an error when read:
//! never read as good, never a panic, never an allocation the file cannot back.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use loupe_data::reader::Store;
use loupe_model::HookPoint;
use loupe_sae::testing::{synthetic, write_store};
use loupe_sae::{saelens, train, Checkpoint, NoObserver, TrainConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const D: usize = 16;
const HOOK: HookPoint = HookPoint::ResidPost(2);

/// The ways a file is damaged in these tests.
fn damage(original: &[u8], case: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(case);
    let mut bytes = original.to_vec();
    match case % 4 {
        // One to three flipped bits anywhere.
        0 | 1 => {
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
        }
        // Cut short anywhere.
        2 => bytes.truncate(rng.random_range(0..bytes.len())),
        // A number in the header (the length, or digits of a count, offset or shape) made huge.
        _ => {
            let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            if rng.random_bool(0.2) {
                let huge = 1u64 << rng.random_range(32..63);
                bytes[..8].copy_from_slice(&huge.to_le_bytes());
            } else {
                let digits: Vec<usize> = (8..header_end.min(bytes.len()))
                    .filter(|&i| bytes[i].is_ascii_digit())
                    .collect();
                let at = digits[rng.random_range(0..digits.len())];
                let huge = format!("{}", 1u64 << rng.random_range(40..63));
                bytes.splice(at..at + 1, huge.bytes());
            }
        }
    }
    bytes
}

/// Runs `read` on `cases` damaged copies of `path`, restoring it after; every case must be an
/// error (`must_fail`) or at least not a panic.
fn each_damaged_copy(path: &Path, cases: u64, must_fail: bool, read: impl Fn() -> Result<(), String>) {
    let original = std::fs::read(path).unwrap();
    for case in 0..cases {
        let damaged = damage(&original, case);
        if damaged == original {
            continue;
        }
        std::fs::write(path, &damaged).unwrap();
        match catch_unwind(AssertUnwindSafe(&read)) {
            Err(_) => panic!("{}: case {case} panicked", path.display()),
            Ok(Ok(())) if must_fail => panic!("{}: case {case} was read as good", path.display()),
            Ok(_) => {}
        }
    }
    std::fs::write(path, original).unwrap();
    read().unwrap();
}

fn store(dir: &Path) -> Store {
    let data = synthetic(D, 32, 1200, 3.0, 1);
    write_store(&dir.join("store"), HOOK, D, &data.rows, 50, "synthetic").unwrap();
    Store::open(&dir.join("store")).unwrap()
}

fn read_all(dir: &Path) -> Result<(), String> {
    let store = Store::open(&dir.join("store")).map_err(|e| e.to_string())?;
    for shard in 0..store.manifest.shards.len() {
        store.read_shard(shard, HOOK).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn every_damaged_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let shard = store.dir.join(&store.manifest.shards[0].file);
    each_damaged_copy(&shard, 2000, true, || read_all(dir.path()));
}

#[test]
fn a_damaged_manifest_is_an_error_or_harmless_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let manifest = dir.path().join("store/manifest.json");
    // The manifest is JSON, not safetensors: flips and cuts only (its numbers are set huge below).
    let original = std::fs::read(&manifest).unwrap();
    for case in 0..1500u64 {
        let damaged = damage(&original, case - case % 4 + (case % 3));
        std::fs::write(&manifest, &damaged).unwrap();
        if catch_unwind(AssertUnwindSafe(|| read_all(dir.path()))).is_err() {
            panic!("case {case} panicked");
        }
    }
    // Counts that claim far more than the shards hold.
    let text = String::from_utf8(original.clone()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (field, value) in [
        ("tokens", serde_json::json!(1u64 << 60)),
        ("contexts", serde_json::json!(u64::MAX)),
    ] {
        let mut damaged = json.clone();
        damaged["shards"][0][field] = value.clone();
        damaged[field] = value;
        std::fs::write(&manifest, damaged.to_string()).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| read_all(dir.path()))).expect("no panic");
        assert!(result.is_err(), "{field}");
    }
    std::fs::write(&manifest, original).unwrap();
    read_all(dir.path()).unwrap();
}

#[test]
fn every_damaged_checkpoint_and_sae_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let text = format!(
        "store = {:?}\nhook = \"{HOOK}\"\noutput = {:?}\narchitecture = \"topk\"\nk = 3\nexpansion = 2\n\
         train_tokens = 512\nbatch_size = 256\nheld_out = 0.2\n",
        dir.path().join("store"),
        dir.path().join("sae"),
    );
    let config = TrainConfig::from_toml(&text, "test", &[]).unwrap();
    train(&config, &mut NoObserver).unwrap();
    let run = dir.path().join("sae");
    each_damaged_copy(&Checkpoint::path(&run), 1500, true, || {
        Checkpoint::load(&run).map(|_| ()).map_err(|e| e.to_string())
    });
    each_damaged_copy(&run.join(saelens::WEIGHTS_FILE), 1500, true, || {
        saelens::load(&run).map(|_| ()).map_err(|e| e.to_string())
    });
}

//! Damaged model files end in an error that names the file, never in a panic or an allocation
//! abort. The tiny models of `loupe_model::testing` are written here, then damaged: bytes flipped
//! in their headers, cut short at random lengths, and huge counts, lengths, dims and offsets
//! planted in them. Every case is seeded; a failure names its family, seed and case (set
//! LOUPE_DAMAGE_SEED to run other seeds, LOUPE_DAMAGE_VERBOSE to print every error).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::Device;
use loupe_model::testing::{write_tiny_gguf, write_tiny_hf_dir};
use loupe_model::Model;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// The tiny models need well under a megabyte at a time, so an allocation of more than this means
/// a corrupt size was believed. It aborts the test with "memory allocation of N bytes failed",
/// after the line naming the case (on Linux a huge allocation can succeed lazily and go unseen).
const MAX_ALLOCATION: usize = 256 << 20;

struct Bounded;

// SAFETY: every call is passed on to the system allocator unchanged, or refused with null (which
// `GlobalAlloc` allows) when it is larger than MAX_ALLOCATION.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

fn seed(default: u64) -> u64 {
    std::env::var("LOUPE_DAMAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Loads damaged models and keeps count; every load must return, and an error must name the file.
struct Cases {
    family: &'static str,
    seed: u64,
    loaded: usize,
    refused: usize,
    failures: Vec<String>,
}

impl Cases {
    fn new(family: &'static str, default_seed: u64) -> Self {
        Cases {
            family,
            seed: seed(default_seed),
            loaded: 0,
            refused: 0,
            failures: Vec::new(),
        }
    }

    fn rng(&self) -> StdRng {
        StdRng::seed_from_u64(self.seed)
    }

    /// Loads the model at `target` (a GGUF file or a model directory); `names` is what an error
    /// must mention (the file or its directory).
    fn load(&mut self, case: &str, target: &Path, names: &Path) {
        // Printed first, so that an abort's output ends with the case that caused it.
        eprintln!("{} seed {}: {case}", self.family, self.seed);
        let name = target.to_str().unwrap();
        match catch_unwind(AssertUnwindSafe(|| Model::load(name, &Device::Cpu))) {
            Ok(Ok(_)) => {
                self.loaded += 1;
                if std::env::var_os("LOUPE_DAMAGE_VERBOSE").is_some() {
                    eprintln!("  loaded");
                }
            }
            Ok(Err(e)) => {
                self.refused += 1;
                let message = e.to_string();
                if std::env::var_os("LOUPE_DAMAGE_VERBOSE").is_some() {
                    eprintln!("  {message}");
                }
                if !message.contains(names.to_str().unwrap()) {
                    self.failures.push(format!(
                        "{case}: the error does not name {}: {message}",
                        names.display()
                    ));
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.failures.push(format!("{case}: panicked: {message}"));
            }
        }
    }

    fn finish(self) {
        eprintln!(
            "{} seed {}: {} cases, {} loaded, {} refused",
            self.family,
            self.seed,
            self.loaded + self.refused + self.failures.len(),
            self.loaded,
            self.refused
        );
        assert!(
            self.failures.is_empty(),
            "{} seed {} (LOUPE_DAMAGE_SEED={}): {} failing cases, the first:\n{}",
            self.family,
            self.seed,
            self.seed,
            self.failures.len(),
            self.failures
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// A spot in a header where a count, length, type tag or offset is stored.
struct Spot {
    pos: usize,
    /// 4 or 8 bytes.
    width: usize,
    what: String,
}

/// Where the fields of a GGUF file (version 2 or 3, as candle writes it) are.
struct GgufLayout {
    spots: Vec<Spot>,
    /// Where each metadata value starts.
    values: HashMap<String, usize>,
    /// The end of the header (where the padding before the tensor data starts).
    header_end: usize,
}

fn gguf_layout(bytes: &[u8]) -> GgufLayout {
    let u32_at = |p: usize| u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
    let u64_at = |p: usize| u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap()) as usize;
    let mut spots = vec![
        Spot {
            pos: 8,
            width: 8,
            what: "tensor count".into(),
        },
        Spot {
            pos: 16,
            width: 8,
            what: "metadata count".into(),
        },
    ];
    let mut values = HashMap::new();
    let (n_tensors, n_kv) = (u64_at(8), u64_at(16));
    let mut pos = 24;
    let string = |pos: &mut usize, spots: &mut Vec<Spot>, what: String| -> String {
        let len = u64_at(*pos);
        spots.push(Spot {
            pos: *pos,
            width: 8,
            what: format!("length of {what}"),
        });
        let s = String::from_utf8_lossy(&bytes[*pos + 8..*pos + 8 + len]).into_owned();
        *pos += 8 + len;
        s
    };
    fn value(
        bytes: &[u8],
        pos: usize,
        value_type: u32,
        key: &str,
        in_array: bool,
        spots: &mut Vec<Spot>,
    ) -> usize {
        let u32_at = |p: usize| u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
        let u64_at = |p: usize| u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap()) as usize;
        match value_type {
            0 | 1 | 7 => pos + 1,
            2 | 3 => pos + 2,
            4..=6 => {
                // Top-level numbers are the config (sizes, token ids, eps, theta); the elements
                // of arrays (token types) would crowd them out.
                if !in_array {
                    spots.push(Spot {
                        pos,
                        width: 4,
                        what: format!("value of '{key}'"),
                    });
                }
                pos + 4
            }
            10..=12 => pos + 8,
            8 => {
                spots.push(Spot {
                    pos,
                    width: 8,
                    what: format!("string length in '{key}'"),
                });
                pos + 8 + u64_at(pos)
            }
            9 => {
                spots.push(Spot {
                    pos,
                    width: 4,
                    what: format!("array element type of '{key}'"),
                });
                spots.push(Spot {
                    pos: pos + 4,
                    width: 8,
                    what: format!("array length of '{key}'"),
                });
                let (element_type, len) = (u32_at(pos), u64_at(pos + 4));
                let mut p = pos + 12;
                for _ in 0..len {
                    p = value(bytes, p, element_type, key, true, spots);
                }
                p
            }
            t => panic!("value type {t} in a file candle wrote"),
        }
    }
    for i in 0..n_kv {
        let key = string(&mut pos, &mut spots, format!("key {i}"));
        spots.push(Spot {
            pos,
            width: 4,
            what: format!("value type of '{key}'"),
        });
        let value_type = u32_at(pos);
        pos += 4;
        values.insert(key.clone(), pos);
        pos = value(bytes, pos, value_type, &key, false, &mut spots);
    }
    for i in 0..n_tensors {
        let name = string(&mut pos, &mut spots, format!("tensor name {i}"));
        spots.push(Spot {
            pos,
            width: 4,
            what: format!("n_dims of '{name}'"),
        });
        let n_dims = u32_at(pos) as usize;
        pos += 4;
        for d in 0..n_dims {
            spots.push(Spot {
                pos,
                width: 8,
                what: format!("dim {d} of '{name}'"),
            });
            pos += 8;
        }
        spots.push(Spot {
            pos,
            width: 4,
            what: format!("ggml type of '{name}'"),
        });
        spots.push(Spot {
            pos: pos + 4,
            width: 8,
            what: format!("data offset of '{name}'"),
        });
        pos += 12;
    }
    GgufLayout {
        spots,
        values,
        header_end: pos,
    }
}

/// A huge value for an 8-byte field: 2^40 to 2^64 - 1.
fn huge(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..4) {
        0 => u64::MAX,
        1 => 1 << rng.random_range(40..64),
        _ => (1u64 << rng.random_range(40..64)) | rng.random_range(0..1u64 << 40),
    }
}

/// A value for a 4-byte field (n_dims, a type tag): small but wrong, or huge.
fn wrong_u32(rng: &mut StdRng) -> u32 {
    match rng.random_range(0..4) {
        0 => u32::MAX,
        1 => rng.random_range(5..64),
        2 => 1 << rng.random_range(16..32),
        _ => rng.random(),
    }
}

/// Plants a value in `spot`: a huge one, or (a third of the time) a plausible-looking but wrong
/// one no larger than twice the file, which misaligns everything after it.
fn plant(bytes: &mut [u8], spot: &Spot, rng: &mut StdRng) -> String {
    if spot.width == 8 {
        let v = if rng.random_range(0..3) == 0 {
            rng.random_range(0..2 * bytes.len() as u64)
        } else {
            huge(rng)
        };
        bytes[spot.pos..spot.pos + 8].copy_from_slice(&v.to_le_bytes());
        format!("{} = {v}", spot.what)
    } else {
        let v = wrong_u32(rng);
        bytes[spot.pos..spot.pos + 4].copy_from_slice(&v.to_le_bytes());
        format!("{} = {v}", spot.what)
    }
}

/// Flips 1 to 4 random bytes in `region` (a bit, or the whole byte replaced).
fn flip(bytes: &mut [u8], region: std::ops::Range<usize>, rng: &mut StdRng) -> String {
    let mut flips = Vec::new();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(region.clone());
        if rng.random_bool(0.5) {
            bytes[at] ^= 1 << rng.random_range(0..8);
        } else {
            bytes[at] = rng.random();
        }
        flips.push(format!("{at}={:#04x}", bytes[at]));
    }
    format!("bytes {}", flips.join(" "))
}

fn tiny_gguf() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, 11).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (dir, path, bytes)
}

#[test]
fn damaged_gguf_files_are_errors() {
    let (_dir, path, original) = tiny_gguf();
    let layout = gguf_layout(&original);
    let mut cases = Cases::new("gguf", 0x6775_6666);
    let mut rng = cases.rng();

    // The undamaged file loads.
    cases.load("undamaged", &path, &path);
    assert_eq!(cases.loaded, 1, "the undamaged tiny GGUF loads");

    for i in 0..2000 {
        let mut bytes = original.clone();
        let spot = &layout.spots[rng.random_range(0..layout.spots.len())];
        let what = plant(&mut bytes, spot, &mut rng);
        std::fs::write(&path, &bytes).unwrap();
        cases.load(&format!("planted {i}: {what}"), &path, &path);
    }
    for i in 0..1500 {
        let mut bytes = original.clone();
        let what = flip(&mut bytes, 0..layout.header_end, &mut rng);
        std::fs::write(&path, &bytes).unwrap();
        cases.load(&format!("flipped {i}: {what}"), &path, &path);
    }
    let boundaries = [
        0,
        3,
        4,
        7,
        8,
        16,
        23,
        24,
        layout.header_end - 1,
        layout.header_end,
    ];
    for (i, len) in boundaries
        .into_iter()
        .chain((0..500).map(|_| rng.random_range(0..original.len())))
        .enumerate()
    {
        std::fs::write(&path, &original[..len]).unwrap();
        cases.load(&format!("truncated {i}: to {len} bytes"), &path, &path);
    }
    cases.finish();
}

/// Writes a safetensors file: the header JSON (length-prefixed) and the data as they are.
fn safetensors_bytes(header: &Value, data: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap();
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes.extend(data);
    bytes
}

#[test]
fn damaged_safetensors_weights_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(dir.path(), 11).unwrap();
    let weights = dir.path().join("model.safetensors");
    let original = std::fs::read(&weights).unwrap();
    let header_len = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&original[8..8 + header_len]).unwrap();
    let data = &original[8 + header_len..];
    let names: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let mut cases = Cases::new("safetensors", 0x7361_6665);
    let mut rng = cases.rng();

    cases.load("undamaged", dir.path(), dir.path());
    assert_eq!(cases.loaded, 1, "the undamaged tiny model directory loads");

    // Huge or wrong header lengths.
    for i in 0..200 {
        let mut bytes = original.clone();
        let what = plant(
            &mut bytes,
            &Spot {
                pos: 0,
                width: 8,
                what: "header length".into(),
            },
            &mut rng,
        );
        std::fs::write(&weights, &bytes).unwrap();
        cases.load(&format!("planted {i}: {what}"), dir.path(), dir.path());
    }
    // Huge or wrong offsets, shapes and dtypes in the header of one tensor.
    for i in 0..600 {
        let mut header = header.clone();
        let name = &names[rng.random_range(0..names.len())];
        let entry = &mut header[name];
        let what = match rng.random_range(0..6) {
            0 => {
                let v = huge(&mut rng);
                entry["data_offsets"][rng.random_range(0..2)] = json!(v);
                format!("an offset of {name} = {v}")
            }
            1 => {
                let v = rng.random_range(0..2 * data.len() as u64);
                entry["data_offsets"][rng.random_range(0..2)] = json!(v);
                format!("an offset of {name} = {v}")
            }
            2 => {
                let dims = entry["shape"].as_array().unwrap().len();
                let v = huge(&mut rng);
                entry["shape"][rng.random_range(0..dims)] = json!(v);
                format!("a dim of {name} = {v}")
            }
            3 => {
                let n = rng.random_range(0..40);
                let shape: Vec<u64> = (0..n).map(|_| rng.random_range(0..1u64 << 20)).collect();
                entry["shape"] = json!(shape);
                format!("the shape of {name} = {n} dims")
            }
            4 => {
                let dtype =
                    ["F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "XX"][rng.random_range(0..8)];
                entry["dtype"] = json!(dtype);
                format!("the dtype of {name} = {dtype}")
            }
            _ => {
                entry["data_offsets"] = json!([-1, 1.5]);
                format!("the offsets of {name} are not integers")
            }
        };
        std::fs::write(&weights, safetensors_bytes(&header, data)).unwrap();
        cases.load(&format!("header {i}: {what}"), dir.path(), dir.path());
    }
    for i in 0..1000 {
        let mut bytes = original.clone();
        let what = flip(&mut bytes, 0..8 + header_len, &mut rng);
        std::fs::write(&weights, &bytes).unwrap();
        cases.load(&format!("flipped {i}: {what}"), dir.path(), dir.path());
    }
    let boundaries = [0, 1, 7, 8, 9, 8 + header_len - 1, 8 + header_len];
    for (i, len) in boundaries
        .into_iter()
        .chain((0..300).map(|_| rng.random_range(0..original.len())))
        .enumerate()
    {
        std::fs::write(&weights, &original[..len]).unwrap();
        cases.load(&format!("truncated {i}: to {len} bytes"), dir.path(), dir.path());
    }
    cases.finish();
}

#[test]
fn damaged_tokenizer_json_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(dir.path(), 11).unwrap();
    let tokenizer = dir.path().join("tokenizer.json");
    let original = std::fs::read(&tokenizer).unwrap();
    let mut cases = Cases::new("tokenizer.json", 0x746f_6b65);
    let mut rng = cases.rng();
    for i in 0..300 {
        let mut bytes = original.clone();
        let what = flip(&mut bytes, 0..original.len(), &mut rng);
        std::fs::write(&tokenizer, &bytes).unwrap();
        cases.load(&format!("flipped {i}: {what}"), dir.path(), dir.path());
    }
    for i in 0..100 {
        let len = rng.random_range(0..original.len());
        std::fs::write(&tokenizer, &original[..len]).unwrap();
        cases.load(&format!("truncated {i}: to {len} bytes"), dir.path(), dir.path());
    }
    cases.finish();
}

#[test]
fn absurd_config_values_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(dir.path(), 11).unwrap();
    let config_path = dir.path().join("config.json");
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let mut cases = Cases::new("config.json", 0);
    let fields = [
        "hidden_size",
        "intermediate_size",
        "vocab_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_theta",
    ];
    let values = [
        json!(0),
        json!(1),
        json!(3),
        json!((1u64 << 20) + 1),
        json!(1_000_000_000u64),
        json!(1u64 << 40),
        json!(1u64 << 63),
        json!(u64::MAX),
        json!(-1),
        json!(1e300),
        json!("x"),
        Value::Null,
    ];
    for field in fields {
        for value in &values {
            let mut config = original.clone();
            config[field] = value.clone();
            std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
            cases.load(&format!("{field} = {value}"), dir.path(), dir.path());
        }
    }
    cases.finish();
}

/// The error loading `name` (which must fail).
fn load_error(name: &Path) -> String {
    match Model::load(name.to_str().unwrap(), &Device::Cpu) {
        Ok(_) => panic!("{} loaded", name.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_absurd_context_length_is_refused_before_the_rope_tables_are_built() {
    // GGUF: llama.context_length is a u32 value.
    let (_dir, path, mut bytes) = tiny_gguf();
    let at = gguf_layout(&bytes).values["llama.context_length"];
    bytes[at..at + 4].copy_from_slice(&1_000_000_000u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let message = load_error(&path);
    assert!(
        message.contains("llama.context_length is 1000000000 positions"),
        "{message}"
    );
    assert!(message.starts_with(path.to_str().unwrap()), "{message}");

    // config.json
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(dir.path(), 11).unwrap();
    let config_path = dir.path().join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["max_position_embeddings"] = json!(1_000_000_000u64);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let message = load_error(dir.path());
    assert!(
        message.contains("max_position_embeddings is 1000000000 positions"),
        "{message}"
    );
    assert!(message.contains("config.json"), "{message}");
}

#[test]
fn a_bert_directory_names_its_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "vocab_size": 30522,
        "max_position_embeddings": 512,
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let message = load_error(dir.path());
    assert!(
        message.contains("architecture bert is not supported; loupe runs llama"),
        "{message}"
    );

    // Without model_type, the architectures list tells.
    let mut config = config;
    config.as_object_mut().unwrap().remove("model_type");
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let message = load_error(dir.path());
    assert!(
        message.contains("architecture BertModel is not supported"),
        "{message}"
    );
}

#[test]
fn header_errors_say_what_is_wrong() {
    let (_dir, path, original) = tiny_gguf();
    let mut bytes = original.clone();
    bytes[16..24].copy_from_slice(&(1u64 << 45).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let message = load_error(&path);
    assert!(
        message.contains("claims 35,184,372,088,832 (about 2^45) metadata entries"),
        "{message}"
    );
    assert!(message.contains("delete it and fetch it again"), "{message}");

    std::fs::write(&path, &original[..original.len() / 2]).unwrap();
    let message = load_error(&path);
    assert!(message.contains("past its end"), "{message}");

    std::fs::write(&path, b"PK\x03\x04 not a model").unwrap();
    let message = load_error(&path);
    assert!(message.contains("not a GGUF file"), "{message}");
}

#[test]
fn a_truncated_safetensors_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(dir.path(), 11).unwrap();
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let message = load_error(dir.path());
    assert!(message.contains(weights.to_str().unwrap()), "{message}");
}

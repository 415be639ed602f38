//! Capture into a store and read it back, on a tiny random-weight model the test writes itself.

use std::path::Path;

use candle_core::{Device, Tensor};
use loupe_data::capture::{capture, CaptureConfig};
use loupe_data::corpus::{interleave, CorpusSpec};
use loupe_data::packing::{Packer, NO_LABEL};
use loupe_data::reader::{ShardData, ShardFields, Split, Store};
use loupe_data::store::StoreDType;
use loupe_model::testing::{max_abs, write_tiny_hf_dir};
use loupe_model::{Batch, HookPoint, Hooks, Model};
use loupe_util::{NoProgress, Progress};

const RESID: HookPoint = HookPoint::ResidPost(1);
const NEURONS: HookPoint = HookPoint::MlpPost(2);

struct Setup {
    dir: tempfile::TempDir,
    model: Model,
    corpus: CorpusSpec,
}

fn setup(docs: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(&dir.path().join("model"), 5).unwrap();
    let model = Model::load(dir.path().join("model").to_str().unwrap(), &Device::Cpu).unwrap();
    let langs = ["en", "de", "fr"];
    let mut jsonl = String::new();
    for i in 0..docs {
        let words = (0..(3 + (i * 7) % 40))
            .map(|w| format!("w{}t{}", i, w % 5))
            .collect::<Vec<_>>()
            .join(" ");
        jsonl.push_str(&serde_json::json!({"text": words, "lang": langs[i % 3], "id": i}).to_string());
        jsonl.push('\n');
    }
    let path = dir.path().join("corpus.jsonl");
    std::fs::write(&path, jsonl).unwrap();
    let corpus = CorpusSpec {
        path: path.to_str().unwrap().into(),
        text_field: "text".into(),
        labels: vec!["lang".into()],
        spans: None,
        only: Default::default(),
    };
    Setup { dir, model, corpus }
}

fn config(s: &Setup, out: &str) -> CaptureConfig {
    CaptureConfig {
        model: "tiny".into(),
        hooks: vec![RESID, NEURONS],
        output: s.dir.path().join(out).to_str().unwrap().into(),
        context_length: 24,
        batch_size: 3,
        max_tokens: None,
        dtype: StoreDType::F32,
        shard_contexts: 4,
        include_separators: false,
        separator: None,
        corpus: vec![s.corpus.clone()],
    }
}

/// Every row of the store, shards concatenated in order.
fn all_rows(store: &Store, hook: HookPoint) -> ShardData {
    let shards: Vec<ShardData> = (0..store.manifest.shards.len())
        .map(|i| store.read_shard(i, hook).unwrap())
        .collect();
    let acts: Vec<Tensor> = shards.iter().map(|s| s.activations.clone()).collect();
    let mut fields = ShardFields::default();
    for s in &shards {
        fields.append(&s.fields, s.fields.len());
    }
    ShardData {
        activations: Tensor::cat(&acts, 0).unwrap(),
        fields,
    }
}

#[test]
fn stored_activations_equal_the_hooked_forward() {
    let s = setup(30);
    let cfg = config(&s, "store");
    let manifest = capture(&s.model, &cfg, &mut NoProgress).unwrap();
    assert!(manifest.complete && manifest.shards.len() > 2, "{manifest:?}");
    let store = Store::open(Path::new(&cfg.output)).unwrap();

    // Recompute every context with the hooked forward, one at a time.
    let documents = interleave(&cfg.corpus).unwrap();
    let contexts: Vec<_> = Packer::new(
        documents,
        &s.model.tokenizer,
        24,
        manifest.separator_token,
        vec!["lang".into()],
        None,
    )
    .map(|c| c.unwrap())
    .collect();
    assert_eq!(contexts.len() as u64, manifest.contexts);
    for hook in [RESID, NEURONS] {
        let mut expected = Vec::new();
        for context in &contexts {
            let batch = Batch::left_padded(std::slice::from_ref(&context.tokens), 0, &Device::Cpu).unwrap();
            let mut hooks = Hooks::new().capture(hook);
            s.model.capture(&batch, &mut hooks).unwrap();
            let acts = hooks.captured(hook).unwrap().squeeze(0).unwrap();
            for i in (0..context.tokens.len()).filter(|&i| !context.is_separator(i)) {
                expected.push(acts.get(i).unwrap());
            }
        }
        let expected = Tensor::stack(&expected, 0).unwrap();
        let stored = all_rows(&store, hook).activations;
        assert_eq!(stored.dims(), expected.dims());
        let diff = max_abs(&(&stored - &expected).unwrap());
        // Batched (with a padded last batch) versus one context at a time: float-level agreement.
        let scale = max_abs(&expected);
        assert!(diff <= 1e-5 * scale, "{hook}: {diff} (scale {scale})");
    }
}

#[test]
fn half_precision_stores_are_within_their_precision() {
    let s = setup(12);
    let exact = capture(&s.model, &config(&s, "f32"), &mut NoProgress).unwrap();
    let reference = all_rows(&Store::open(&s.dir.path().join("f32")).unwrap(), RESID).activations;
    for (dtype, name, rel) in [(StoreDType::F16, "f16", 1e-3), (StoreDType::Bf16, "bf16", 8e-3)] {
        let cfg = CaptureConfig {
            dtype,
            ..config(&s, name)
        };
        let m = capture(&s.model, &cfg, &mut NoProgress).unwrap();
        assert_eq!(m.tokens, exact.tokens);
        let stored = all_rows(&Store::open(Path::new(&cfg.output)).unwrap(), RESID).activations;
        let err = ((&stored - &reference).unwrap().abs().unwrap()
            / (reference.abs().unwrap() + 1e-3).unwrap())
        .unwrap();
        let worst = max_abs(&err);
        assert!(worst < rel as f32, "{name}: relative error {worst}");
    }
}

#[test]
fn packing_loses_and_duplicates_no_token_and_keeps_labels_aligned() {
    let s = setup(40);
    let cfg = config(&s, "store");
    let manifest = capture(&s.model, &cfg, &mut NoProgress).unwrap();
    let store = Store::open(Path::new(&cfg.output)).unwrap();
    let rows = all_rows(&store, RESID);
    let (tokens, docs, contexts, positions, langs) = (
        rows.fields.token_ids,
        rows.fields.doc_ids,
        rows.fields.context_ids,
        rows.fields.positions,
        &rows.fields.labels[0],
    );
    assert_eq!(tokens.len() as u64, manifest.tokens);
    let texts: Vec<serde_json::Value> = std::fs::read_to_string(&s.corpus.path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lang_values = &manifest.labels.values[0];
    for (d, doc) in texts.iter().enumerate() {
        let rows: Vec<usize> = (0..docs.len()).filter(|&r| docs[r] == d as u32).collect();
        let stored: Vec<u32> = rows.iter().map(|&r| tokens[r]).collect();
        assert_eq!(
            stored,
            s.model.tokenizer.encode(doc["text"].as_str().unwrap()).unwrap(),
            "document {d}"
        );
        for &r in &rows {
            assert_ne!(langs[r], NO_LABEL);
            assert_eq!(
                lang_values[langs[r] as usize],
                doc["lang"].as_str().unwrap(),
                "row {r}"
            );
        }
    }
    // Rows come in context order, positions inside each context ascending and never the separator at 0.
    for r in 1..tokens.len() {
        assert!((contexts[r], positions[r]) > (contexts[r - 1], positions[r - 1]));
    }
    assert!(positions.iter().all(|&p| p > 0 && p < 24));
}

/// Stops the capture after `after` batches, as Ctrl-C or a kill would (mid-shard).
struct StopAfter {
    after: u32,
    batches: u32,
}

impl Progress for StopAfter {
    fn advance(&mut self, _: u64) {
        self.batches += 1;
    }
    fn should_stop(&self) -> bool {
        self.batches >= self.after
    }
}

#[test]
fn an_interrupted_capture_resumes_to_the_same_store() {
    let s = setup(40);
    let whole = config(&s, "whole");
    capture(&s.model, &whole, &mut NoProgress).unwrap();
    let parts = config(&s, "parts");
    // Stop in the middle of the third shard (shards are 4 contexts, batches 3).
    let partial = capture(&s.model, &parts, &mut StopAfter { after: 5, batches: 0 }).unwrap();
    assert!(!partial.complete && partial.shards.len() == 2, "{partial:?}");
    // A temp file left by a kill mid-write is cleaned up on resume.
    std::fs::write(
        Path::new(&parts.output).join("shard-00002.safetensors.tmp"),
        b"half a shard",
    )
    .unwrap();
    let resumed = capture(&s.model, &parts, &mut NoProgress).unwrap();
    assert!(resumed.complete);
    let mut files: Vec<_> = std::fs::read_dir(&whole.output)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    let mut resumed_files: Vec<_> = std::fs::read_dir(&parts.output)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    resumed_files.sort();
    assert_eq!(files, resumed_files);
    for file in files.iter().filter(|f| f.to_str().unwrap().starts_with("shard")) {
        let a = std::fs::read(Path::new(&whole.output).join(file)).unwrap();
        let b = std::fs::read(Path::new(&parts.output).join(file)).unwrap();
        assert!(a == b, "{file:?} differs");
    }
    let (mut a, mut b) = (Store::open(Path::new(&whole.output)).unwrap().manifest, resumed);
    a.corpus.clear();
    b.corpus.clear();
    assert_eq!(a, b);
}

#[test]
fn stores_of_another_model_or_hook_are_refused_and_left_intact() {
    let s = setup(10);
    let cfg = config(&s, "store");
    capture(
        &s.model,
        &CaptureConfig {
            max_tokens: Some(30),
            ..cfg.clone()
        },
        &mut NoProgress,
    )
    .unwrap();
    let manifest_before = std::fs::read(Path::new(&cfg.output).join("manifest.json")).unwrap();
    let other = CaptureConfig {
        hooks: vec![HookPoint::ResidPost(0)],
        ..cfg.clone()
    };
    let err = capture(&s.model, &other, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("differs in its hooks") && err.contains("blocks.0.hook_resid_post"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(Path::new(&cfg.output).join("manifest.json")).unwrap(),
        manifest_before
    );

    let store = Store::open(Path::new(&cfg.output)).unwrap();
    store
        .check(Some(&s.model.source.fingerprint().unwrap()), RESID, 32)
        .unwrap();
    let err = store
        .check(Some("0123456789abcdef"), RESID, 32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("another model"), "{err}");
    let err = store
        .check(None, HookPoint::ResidPost(0), 32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no activations for blocks.0.hook_resid_post")
            && err.contains("blocks.1.hook_resid_post"),
        "{err}"
    );
    let err = store.check(None, RESID, 64).unwrap_err().to_string();
    assert!(err.contains("32 wide"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let s = setup(5);
    let cfg = config(&s, "store");
    let err = |c: CaptureConfig| capture(&s.model, &c, &mut NoProgress).unwrap_err().to_string();

    let e = err(CaptureConfig {
        context_length: 0,
        ..cfg.clone()
    });
    assert!(e.contains("context_length") && e.contains("64"), "{e}");
    let e = err(CaptureConfig {
        context_length: 65,
        ..config(&s, "b")
    });
    assert!(e.contains("context_length: is 65"), "{e}");

    let empty = s.dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let e = err(CaptureConfig {
        corpus: vec![CorpusSpec {
            path: empty.to_str().unwrap().into(),
            ..s.corpus.clone()
        }],
        ..config(&s, "c")
    });
    assert!(e.contains("no text"), "{e}");

    let bad = s.dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\", \"lang\": \"en\"}\n{oops\n").unwrap();
    let e = err(CaptureConfig {
        corpus: vec![CorpusSpec {
            path: bad.to_str().unwrap().into(),
            ..s.corpus.clone()
        }],
        ..config(&s, "d")
    });
    assert!(e.contains("bad.jsonl") && e.contains("line 2"), "{e}");

    let e = err(CaptureConfig {
        corpus: vec![CorpusSpec {
            text_field: "body".into(),
            ..s.corpus.clone()
        }],
        ..config(&s, "e")
    });
    assert!(e.contains("no text field 'body'"), "{e}");

    let blocker = s.dir.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let e = err(CaptureConfig {
        output: blocker.join("store").to_str().unwrap().into(),
        ..cfg.clone()
    });
    assert!(e.contains("a-file/store: cannot create the directory"), "{e}");

    let e = err(CaptureConfig {
        hooks: vec![HookPoint::ResidPost(9)],
        ..cfg.clone()
    });
    assert!(e.contains("3 layers"), "{e}");
}

#[test]
fn shuffled_batches_cover_each_split_once() {
    let s = setup(60);
    let cfg = config(&s, "store");
    let manifest = capture(&s.model, &cfg, &mut NoProgress).unwrap();
    let store = Store::open(Path::new(&cfg.output)).unwrap();
    let rows = all_rows(&store, RESID);
    let (all, docs) = (rows.activations, rows.fields.doc_ids);
    let held = |d: &u32| {
        Split::HeldOut {
            held_out: 0.25,
            seed: 3,
        }
        .contains(*d)
    };
    let n_held = docs.iter().filter(|d| held(d)).count();
    assert!(n_held > 0 && n_held < docs.len());

    let mut seen = 0;
    let mut sum = Tensor::zeros(32, candle_core::DType::F32, &Device::Cpu).unwrap();
    for batch in store
        .batches(
            RESID,
            16,
            40,
            Split::Train {
                held_out: 0.25,
                seed: 3,
            },
            1,
        )
        .unwrap()
    {
        let batch = batch.unwrap();
        seen += batch.dim(0).unwrap();
        sum = (sum + batch.sum(0).unwrap()).unwrap();
    }
    assert_eq!(seen, docs.len() - n_held);
    // The same rows, in another order: their sum matches.
    let train_rows: Vec<u32> = (0..docs.len() as u32)
        .filter(|&r| !held(&docs[r as usize]))
        .collect();
    let expected = all
        .index_select(&Tensor::new(train_rows.as_slice(), &Device::Cpu).unwrap(), 0)
        .unwrap()
        .sum(0)
        .unwrap();
    let diff = max_abs(&(&sum - &expected).unwrap());
    let scale = max_abs(&all.abs().unwrap().sum(0).unwrap());
    assert!(diff < 1e-5 * scale, "{diff} (scale {scale})");
    let held_out: usize = store
        .batches(
            RESID,
            7,
            40,
            Split::HeldOut {
                held_out: 0.25,
                seed: 3,
            },
            1,
        )
        .unwrap()
        .map(|b| b.unwrap().dim(0).unwrap())
        .sum();
    assert_eq!(held_out, n_held);
    assert_eq!(manifest.tokens as usize, docs.len());
}

#[test]
fn labelled_spans_become_token_labels() {
    let s = setup(1);
    let text = "he said \"tt t\" and left";
    let start = text.find('"').unwrap();
    let end = text.rfind('"').unwrap() + 1;
    let path = s.dir.path().join("spans.jsonl");
    let line = serde_json::json!({"text": text, "spans": [{"start": start, "end": end, "label": "quote"}]});
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let spec = CorpusSpec {
        path: path.to_str().unwrap().into(),
        text_field: "text".into(),
        labels: vec![],
        only: Default::default(),
        spans: Some("spans".into()),
    };
    let documents = interleave(&[spec]).unwrap();
    let mut packer = Packer::new(documents, &s.model.tokenizer, 64, 0, vec![], Some("spans".into()));
    let context = packer.next().unwrap().unwrap();
    assert_eq!(packer.vocab.fields, vec!["spans"]);
    assert_eq!(packer.vocab.values, vec![vec!["quote".to_string()]]);
    let (ids, offsets) = s.model.tokenizer.encode_with_offsets(text).unwrap();
    assert_eq!(&context.tokens[1..], ids.as_slice());
    for (i, &(a, b)) in offsets.iter().enumerate() {
        let inside = a < end && b > start;
        let label = context.labels[0][i + 1];
        assert_eq!(label == 0, inside, "token {i} {:?}", &text[a..b]);
        assert!(inside || label == NO_LABEL);
    }
    assert!(context.labels[0].contains(&0) && context.labels[0].contains(&NO_LABEL));
}

#[test]
fn activations_f16_cannot_hold_stop_the_capture_with_the_document_named() {
    let s = setup(12);
    // The same tiny model with embeddings 10^6 times larger: its residual stream overflows f16.
    let big = s.dir.path().join("big-model");
    write_tiny_hf_dir(&big, 5).unwrap();
    let weights = big.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let embed = tensors["model.embed_tokens.weight"].clone();
    tensors.insert("model.embed_tokens.weight".into(), (embed * 1e6).unwrap());
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let model = Model::load(big.to_str().unwrap(), &Device::Cpu).unwrap();
    let config = CaptureConfig {
        dtype: StoreDType::F16,
        ..config(&s, "overflow")
    };
    let e = match capture(&model, &config, &mut NoProgress) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a store of infinities was written"),
    };
    assert!(e.contains("document 0") && e.contains("range of f16"), "{e}");
    let store = s.dir.path().join("overflow");
    assert!(!store.join("shard-00000.safetensors").exists());
    // In f32 the same activations are stored.
    let config = CaptureConfig {
        dtype: StoreDType::F32,
        output: s.dir.path().join("f32").to_str().unwrap().into(),
        ..config
    };
    capture(&model, &config, &mut NoProgress).unwrap();
}

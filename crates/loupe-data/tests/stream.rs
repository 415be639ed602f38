//! Activations streamed from a tiny random-weight model: a pass holds exactly the rows `loupe
//! capture` stores (from the same packing and forward passes), the held-out documents are the
//! corpus's first ones, and a stream opened at a recorded position goes on exactly as the stream
//! it was recorded from.

use candle_core::Device;
use loupe_data::capture::{capture, CaptureConfig};
use loupe_data::corpus::CorpusSpec;
use loupe_data::reader::{Split, Store};
use loupe_data::store::StoreDType;
use loupe_data::stream::{held_out_documents, ActivationStream, StreamConfig, StreamPosition, StreamSplit};
use loupe_model::testing::write_tiny_hf_dir;
use loupe_model::{HookPoint, Model};
use loupe_util::NoProgress;

const HOOKS: [HookPoint; 2] = [HookPoint::Ln2Normalized(1), HookPoint::MlpOut(1)];

fn setup() -> (tempfile::TempDir, Model, StreamConfig) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(&dir.path().join("model"), 5).unwrap();
    let model = Model::load(dir.path().join("model").to_str().unwrap(), &Device::Cpu).unwrap();
    let jsonl: String = (0..40)
        .map(|i| {
            let words: Vec<String> = (0..(3 + (i * 7) % 30))
                .map(|w| format!("w{i}t{}", w % 5))
                .collect();
            serde_json::json!({ "text": words.join(" ") }).to_string() + "\n"
        })
        .collect();
    let path = dir.path().join("corpus.jsonl");
    std::fs::write(&path, jsonl).unwrap();
    let stream = StreamConfig {
        model: "tiny".into(),
        context_length: 24,
        batch_size: 3,
        max_tokens: None,
        include_separators: false,
        separator: None,
        corpus: vec![CorpusSpec {
            path: path.to_str().unwrap().into(),
            text_field: "text".into(),
            labels: vec![],
            spans: None,
            only: Default::default(),
        }],
    };
    (dir, model, stream)
}

/// Rows as sortable bit patterns, so that two sets of rows compare whatever their order.
fn sorted_rows(rows: &[Vec<f32>]) -> Vec<Vec<u32>> {
    let mut bits: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| r.iter().map(|v| v.to_bits()).collect())
        .collect();
    bits.sort();
    bits
}

fn rows_of(batches: impl Iterator<Item = loupe_data::Result<candle_core::Tensor>>) -> Vec<Vec<f32>> {
    batches
        .flat_map(|b| b.unwrap().to_vec2::<f32>().unwrap())
        .collect()
}

/// What `loupe capture` stores from the stream's model, settings and corpus.
fn capture_store(dir: &tempfile::TempDir, model: &Model, stream: &StreamConfig) -> Store {
    let out = dir.path().join("store");
    let capture_config = CaptureConfig {
        model: "tiny".into(),
        hooks: HOOKS.to_vec(),
        output: out.to_str().unwrap().into(),
        context_length: stream.context_length,
        batch_size: stream.batch_size,
        max_tokens: None,
        dtype: StoreDType::F32,
        shard_contexts: 4,
        include_separators: false,
        separator: None,
        corpus: stream.corpus.clone(),
    };
    capture(model, &capture_config, &mut NoProgress).unwrap();
    Store::open(&out).unwrap()
}

#[test]
fn a_pass_holds_the_rows_a_capture_stores() {
    let (dir, model, stream) = setup();
    let store = capture_store(&dir, &model, &stream);
    let stored = rows_of(store.batches_of(&HOOKS, 1000, 100_000, Split::All, 0).unwrap());
    // With one batch as large as the pass, nothing is dropped at a block's end: the rows are
    // exactly the store's.
    let all = ActivationStream::open(
        &model,
        &stream,
        &HOOKS,
        StreamSplit::From(0),
        stored.len(),
        stored.len(),
        1,
        StreamPosition::default(),
    )
    .unwrap();
    let streamed = rows_of(all);
    assert_eq!(streamed.len(), stored.len());
    assert_eq!(sorted_rows(&streamed), sorted_rows(&stored));

    // In batches of 7 from blocks of at least 50 rows, each block's last partial batch is
    // dropped: every row streamed is stored, and most stored rows are streamed.
    let small = ActivationStream::open(
        &model,
        &stream,
        &HOOKS,
        StreamSplit::From(0),
        7,
        50,
        1,
        StreamPosition::default(),
    )
    .unwrap();
    let streamed = sorted_rows(&rows_of(small));
    let stored = sorted_rows(&stored);
    assert!(
        streamed.len() > stored.len() * 8 / 10,
        "{} of {}",
        streamed.len(),
        stored.len()
    );
    assert!(streamed.iter().all(|r| stored.binary_search(r).is_ok()));
}

/// The held-out rows are exactly the rows a capture stores for the documents before the
/// boundary, and the training rows those of the documents from it on.
#[test]
fn the_held_out_documents_are_the_first_ones_and_train_on_none_of_them() {
    let (dir, model, stream) = setup();
    let docs = held_out_documents(&model, &stream, &HOOKS, 60).unwrap();
    assert!(docs >= 2, "{docs}");
    let store = capture_store(&dir, &model, &stream);
    let (mut before, mut from) = (Vec::new(), Vec::new());
    for shard in 0..store.manifest.shards.len() {
        let (input, output) = (
            store.read_shard(shard, HOOKS[0]).unwrap(),
            store.read_shard(shard, HOOKS[1]).unwrap(),
        );
        let rows = candle_core::Tensor::cat(&[&input.activations, &output.activations], 1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (row, &doc) in rows.into_iter().zip(&input.fields.doc_ids) {
            if doc < docs {
                before.push(row)
            } else {
                from.push(row)
            }
        }
    }
    let open = |split, n| {
        ActivationStream::open(&model, &stream, &HOOKS, split, n, n, 3, StreamPosition::default()).unwrap()
    };
    let held_out = rows_of(open(StreamSplit::Before(docs), before.len()));
    assert!(held_out.len() >= 60, "{}", held_out.len());
    assert_eq!(sorted_rows(&held_out), sorted_rows(&before));
    let training = rows_of(open(StreamSplit::From(docs), from.len()));
    assert_eq!(sorted_rows(&training), sorted_rows(&from));
}

#[test]
fn a_stream_opened_where_another_stood_goes_on_as_it_would_have() {
    let (_dir, model, stream) = setup();
    let open = |start| {
        ActivationStream::open(&model, &stream, &HOOKS, StreamSplit::From(0), 5, 40, 9, start).unwrap()
    };
    let mut whole = open(StreamPosition::default());
    let mut positions = Vec::new();
    let mut batches = Vec::new();
    while let Some(batch) = whole.next() {
        batches.push(batch.unwrap().to_vec2::<f32>().unwrap());
        positions.push(whole.next_position());
    }
    assert!(batches.len() > 10, "{}", batches.len());
    assert!(
        positions.iter().any(|p| p.block > 1),
        "several blocks: {positions:?}"
    );
    // From recorded positions (mid-block, at a block's end, before the pass's last partial
    // batch), the rest is the same.
    let last = batches.len() - 1;
    let at_block_end = positions.iter().position(|p| p.batches_in_block == 0).unwrap();
    for i in (0..last).step_by(97).chain([at_block_end, last - 1]) {
        let position = positions[i];
        let rest: Vec<Vec<Vec<f32>>> = open(position)
            .map(|b| b.unwrap().to_vec2::<f32>().unwrap())
            .collect();
        assert_eq!(rest, batches[i + 1..], "after batch {i} ({position:?})");
    }
}

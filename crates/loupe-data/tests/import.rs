//! `loupe store import`: what goes in comes out of the store reader (activations, token ids,
//! documents, labels), and bad input is refused with the file, the tensor and the fix named.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use loupe_data::import::{import, ImportSpec, TensorSource, IMPORTED_SHA256};
use loupe_data::packing::NO_LABEL;
use loupe_data::reader::Store;
use loupe_data::store::StoreDType;
use loupe_model::HookPoint;
use loupe_util::NoProgress;

const HOOK: HookPoint = HookPoint::ResidPost(6);

fn spec(input: &Path, output: &Path) -> ImportSpec {
    ImportSpec {
        activations: input.to_str().unwrap().parse().unwrap(),
        token_ids: None,
        doc_ids: None,
        labels: Vec::new(),
        output: output.to_path_buf(),
        hook: HOOK,
        target: None,
        model: "elsewhere".into(),
        dtype: StoreDType::F32,
        context_length: 4,
        shard_contexts: 3,
    }
}

/// Rows `i` of width `d` with values `i + j / 10`.
fn rows(n: usize, d: usize) -> Vec<f32> {
    (0..n * d)
        .map(|v| (v / d) as f32 + (v % d) as f32 / 10.0)
        .collect()
}

fn save(path: &Path, tensors: Vec<(&str, Tensor)>) {
    let tensors: HashMap<String, Tensor> = tensors.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
    candle_core::safetensors::save(&tensors, path).unwrap();
}

/// Every row of the store, in order: activations, token ids, doc ids, positions, labels.
fn read_back(dir: &Path) -> (Store, Vec<f32>, loupe_data::reader::ShardFields) {
    let store = Store::open(dir).unwrap();
    let mut values = Vec::new();
    let mut fields = loupe_data::reader::ShardFields::default();
    for index in 0..store.manifest.shards.len() {
        let shard = store.read_shard(index, HOOK).unwrap();
        values.extend(shard.activations.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        fields.append(&shard.fields, usize::MAX);
    }
    (store, values, fields)
}

#[test]
fn a_safetensors_file_with_token_ids_and_labels_reads_back_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (30, 5);
    let input = dir.path().join("cache.safetensors");
    let lang: Vec<i64> = (0..n as i64)
        .map(|i| if i % 7 == 0 { -1 } else { (i % 3) * 5 })
        .collect();
    save(
        &input,
        vec![
            (
                "acts",
                Tensor::from_vec(rows(n, d), (n, d), &Device::Cpu).unwrap(),
            ),
            (
                "token_ids",
                Tensor::arange(100u32, 100 + n as u32, &Device::Cpu).unwrap(),
            ),
            (
                "labels.lang",
                Tensor::from_vec(lang.clone(), n, &Device::Cpu).unwrap(),
            ),
        ],
    );
    let manifest = import(&spec(&input, &dir.path().join("store")), &mut NoProgress).unwrap();
    // 30 rows in contexts of 4 (8 contexts), 3 contexts per shard.
    assert_eq!(
        (manifest.tokens, manifest.contexts, manifest.shards.len()),
        (30, 8, 3)
    );
    assert_eq!(manifest.model.sha256, IMPORTED_SHA256);
    assert_eq!(manifest.imported_from.len(), 1);
    assert_eq!(manifest.imported_from[0].sha256.len(), 64);

    let (store, values, fields) = read_back(&dir.path().join("store"));
    assert_eq!(values, rows(n, d), "activations exactly");
    assert_eq!(fields.token_ids, (100..100 + n as u32).collect::<Vec<_>>());
    // Each context is a document; positions count from 1 (0 is a capture's separator).
    assert_eq!(fields.doc_ids, (0..n as u32).map(|r| r / 4).collect::<Vec<_>>());
    assert_eq!(fields.positions[..5], [1, 2, 3, 4, 1]);
    // Label values keep their integers as text, in increasing order; negative means none.
    assert_eq!(store.manifest.labels.fields, ["lang"]);
    assert_eq!(store.manifest.labels.values[0], ["0", "5", "10"]);
    let expected: Vec<u32> = lang
        .iter()
        .map(|&v| if v < 0 { NO_LABEL } else { (v / 5) as u32 })
        .collect();
    assert_eq!(fields.labels[0], expected);
}

#[test]
fn npy_files_import_with_their_columns_and_to_a_half_precision_store() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (9, 3);
    let acts = Tensor::from_vec(rows(n, d), (n, d), &Device::Cpu).unwrap();
    acts.to_dtype(DType::F64)
        .unwrap()
        .write_npy(dir.path().join("acts.npy"))
        .unwrap();
    let docs = Tensor::from_vec(vec![0i64, 0, 0, 0, 0, 1, 1, 2, 2], (n, 1), &Device::Cpu).unwrap();
    docs.write_npy(dir.path().join("docs.npy")).unwrap();
    let topic = Tensor::from_vec(vec![1u8, 1, 0, 0, 1, 1, 0, 0, 1], n, &Device::Cpu).unwrap();
    topic.write_npy(dir.path().join("topic.npy")).unwrap();
    let mut spec = spec(&dir.path().join("acts.npy"), &dir.path().join("store"));
    spec.doc_ids = Some(dir.path().join("docs.npy").to_str().unwrap().parse().unwrap());
    spec.labels = vec![(
        "topic".into(),
        dir.path().join("topic.npy").to_str().unwrap().parse().unwrap(),
    )];
    spec.dtype = StoreDType::F16;
    import(&spec, &mut NoProgress).unwrap();

    let (store, values, fields) = read_back(&dir.path().join("store"));
    let halves: Vec<f32> = acts
        .to_dtype(DType::F16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(values, halves);
    assert_eq!(fields.doc_ids, [0, 0, 0, 0, 0, 1, 1, 2, 2]);
    assert_eq!(fields.token_ids, [0; 9], "no token ids given");
    assert_eq!(store.manifest.labels.values[0], ["0", "1"]);
    assert_eq!(fields.labels[0], [1, 1, 0, 0, 1, 1, 0, 0, 1]);
}

/// A transcoder's target, a second tensor of the same rows, is filed under its own hook beside
/// the activations, row for row; one of another length is refused before anything is written.
#[test]
fn a_target_of_the_same_rows_is_filed_under_its_hook() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d, d_target) = (10, 3, 5);
    let target_hook = HookPoint::MlpOut(6);
    let input = rows(n, d);
    let target: Vec<f32> = rows(n, d_target).iter().map(|v| -v).collect();
    save(
        &dir.path().join("pair.safetensors"),
        vec![
            (
                "in",
                Tensor::from_vec(input.clone(), (n, d), &Device::Cpu).unwrap(),
            ),
            (
                "out",
                Tensor::from_vec(target.clone(), (n, d_target), &Device::Cpu).unwrap(),
            ),
        ],
    );
    let file = dir.path().join("pair.safetensors");
    let mut spec = spec(&file, &dir.path().join("store"));
    spec.activations = format!("{}:in", file.display()).parse().unwrap();
    spec.target = Some((target_hook, format!("{}:out", file.display()).parse().unwrap()));
    import(&spec, &mut NoProgress).unwrap();
    let (store, values, _) = read_back(&dir.path().join("store"));
    assert_eq!(values, input);
    assert_eq!(store.manifest.hook(target_hook).unwrap().width, d_target);
    let mut stored_target = Vec::new();
    for index in 0..store.manifest.shards.len() {
        let shard = store.read_shard(index, target_hook).unwrap();
        stored_target.extend(shard.activations.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    assert_eq!(stored_target, target);

    save(
        &dir.path().join("short.safetensors"),
        vec![(
            "out",
            Tensor::from_vec(
                target[..(n - 1) * d_target].to_vec(),
                (n - 1, d_target),
                &Device::Cpu,
            )
            .unwrap(),
        )],
    );
    spec.output = dir.path().join("store2");
    spec.target = Some((
        target_hook,
        dir.path()
            .join("short.safetensors")
            .to_str()
            .unwrap()
            .parse()
            .unwrap(),
    ));
    let e = import(&spec, &mut NoProgress).unwrap_err().to_string();
    assert!(
        e.contains("short.safetensors") && e.contains("9 rows") && e.contains("same rows"),
        "{e}"
    );
    assert!(!dir.path().join("store2").exists());
}

#[test]
fn a_tensor_source_names_a_safetensors_tensor_after_a_colon() {
    let s: TensorSource = "dir:a/cache.safetensors:blocks.6.hook_resid_post"
        .parse()
        .unwrap();
    assert_eq!(s.path, Path::new("dir:a/cache.safetensors"));
    assert_eq!(s.name.as_deref(), Some("blocks.6.hook_resid_post"));
    let s: TensorSource = "acts.npy".parse().unwrap();
    assert_eq!((s.path.as_path(), s.name), (Path::new("acts.npy"), None));
    assert!("cache.safetensors:".parse::<TensorSource>().is_err());
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cpu = &Device::Cpu;
    let out = dir.path().join("store");
    let err = |spec: &ImportSpec| import(spec, &mut NoProgress).unwrap_err().to_string();

    // A [batch, position, width] cache.
    let cube = dir.path().join("cube.npy");
    Tensor::zeros((2, 3, 4), DType::F32, cpu)
        .unwrap()
        .write_npy(&cube)
        .unwrap();
    let e = err(&spec(&cube, &out));
    assert!(
        e.contains("cube.npy") && e.contains("[2, 3, 4]") && e.contains("[rows, width]"),
        "{e}"
    );

    // Integer activations.
    let ints = dir.path().join("ints.npy");
    Tensor::zeros((4, 2), DType::I64, cpu)
        .unwrap()
        .write_npy(&ints)
        .unwrap();
    let e = err(&spec(&ints, &out));
    assert!(e.contains("ints.npy") && e.contains("must be floats"), "{e}");

    // Token ids of the wrong length.
    let acts = dir.path().join("acts.npy");
    Tensor::ones((6, 2), DType::F32, cpu)
        .unwrap()
        .write_npy(&acts)
        .unwrap();
    let short = dir.path().join("short.npy");
    Tensor::zeros(5, DType::U32, cpu)
        .unwrap()
        .write_npy(&short)
        .unwrap();
    let mut s = spec(&acts, &out);
    s.token_ids = Some(short.to_str().unwrap().parse().unwrap());
    let e = err(&s);
    assert!(
        e.contains("short.npy") && e.contains("token ids") && e.contains("[6]"),
        "{e}"
    );

    // A NaN, named by row and column; a value f16 cannot hold.
    let nan = dir.path().join("nan.npy");
    let mut values = vec![1f32; 12];
    values[7] = f32::NAN;
    Tensor::from_vec(values, (6, 2), cpu)
        .unwrap()
        .write_npy(&nan)
        .unwrap();
    let e = err(&spec(&nan, &out));
    assert!(e.contains("nan.npy") && e.contains("row 3, column 1"), "{e}");
    let big = dir.path().join("big.npy");
    Tensor::from_vec(vec![1e6f32; 4], (2, 2), cpu)
        .unwrap()
        .write_npy(&big)
        .unwrap();
    let mut s = spec(&big, &out);
    s.dtype = StoreDType::F16;
    let e = err(&s);
    assert!(e.contains("--dtype f32"), "{e}");

    // A safetensors file with two candidates and no name.
    let two = dir.path().join("two.safetensors");
    save(
        &two,
        vec![
            ("a", Tensor::zeros((3, 2), DType::F32, cpu).unwrap()),
            ("b", Tensor::zeros((3, 2), DType::F32, cpu).unwrap()),
        ],
    );
    let e = err(&spec(&two, &out));
    assert!(
        e.contains("several 2-D float tensors (a, b)") && e.contains("two.safetensors:NAME"),
        "{e}"
    );
    assert!(!out.join("manifest.json").exists(), "nothing written");

    // An output that already holds a store.
    import(&spec(&acts, &out), &mut NoProgress).unwrap();
    let e = err(&spec(&acts, &out));
    assert!(e.contains("already holds an activation store"), "{e}");
}

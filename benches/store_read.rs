//! What verifying a store costs: reading every shard as training and probing read it (length and
//! xxh3 checksum against the manifest, tensor shapes, f16 → f32, every value finite) against
//! the checksum alone over the same files. `cargo bench --bench store_read`; the store is
//! `LOUPE_BENCH_STORE_MB` MiB of f16 activations (default 256; the figure used 2048),
//! in shards of 256 contexts × 128 tokens × 576 (SmolLM2's residual stream), as a capture writes.
//!
//! The checksum's share of a read is `checksum_only / read_shards`, measured in the same run.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use loupe_data::reader::Store;
use loupe_data::store::{write_shard, HookInfo, Manifest, ModelInfo, StoreDType};
use loupe_model::HookPoint;

const WIDTH: usize = 576;
const ROWS_PER_SHARD: usize = 256 * 127; // separators are not stored
const HOOK: HookPoint = HookPoint::ResidPost(15);

fn write_store(dir: &std::path::Path, megabytes: usize) -> Store {
    let shard_bytes = ROWS_PER_SHARD * WIDTH * 2;
    let shards = (megabytes << 20).div_ceil(shard_bytes);
    let mut manifest = Manifest::without_shards(
        ModelInfo {
            name: "bench".into(),
            sha256: "bench".into(),
            d_model: WIDTH,
        },
        vec![HookInfo {
            name: HOOK,
            width: WIDTH,
        }],
        StoreDType::F16,
        128,
    );
    let ids = |f: &dyn Fn(usize) -> u32| {
        Tensor::from_vec(
            (0..ROWS_PER_SHARD).map(f).collect::<Vec<u32>>(),
            ROWS_PER_SHARD,
            &Device::Cpu,
        )
    };
    for index in 0..shards {
        let activations = Tensor::randn(0f32, 1.0, (ROWS_PER_SHARD, WIDTH), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F16))
            .unwrap();
        let first = (index * 256) as u32;
        let tensors = HashMap::from([
            (HOOK.to_string(), activations),
            ("token_ids".to_string(), ids(&|r| (r % 1000) as u32).unwrap()),
            ("doc_ids".to_string(), ids(&|r| first + (r / 127) as u32).unwrap()),
            (
                "context_ids".to_string(),
                ids(&|r| first + (r / 127) as u32).unwrap(),
            ),
            ("positions".to_string(), ids(&|r| (r % 127) as u32 + 1).unwrap()),
        ]);
        let info = write_shard(dir, index, &tensors, manifest.contexts, 256).unwrap();
        manifest.tokens += info.tokens;
        manifest.contexts += info.contexts;
        manifest.shards.push(info);
    }
    manifest.write(dir).unwrap();
    Store::open(dir).unwrap()
}

fn bench(c: &mut Criterion) {
    let megabytes: usize = std::env::var("LOUPE_BENCH_STORE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir().unwrap();
    let store = write_store(dir.path(), megabytes);
    let bytes: u64 = store.manifest.shards.iter().map(|s| s.bytes.unwrap()).sum();
    let mut group = c.benchmark_group(format!("store_read_{megabytes}MiB"));
    group.sample_size(10).throughput(Throughput::Bytes(bytes));
    group.bench_function("read_shards", |b| {
        b.iter(|| {
            for index in 0..store.manifest.shards.len() {
                std::hint::black_box(store.read_shard(index, HOOK).unwrap());
            }
        })
    });
    group.bench_function("checksum_only", |b| {
        b.iter(|| {
            for shard in &store.manifest.shards {
                let path = store.dir.join(&shard.file);
                std::hint::black_box(loupe_util::Digest::of_file(&path).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

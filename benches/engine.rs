//! Micro-benchmarks of the engine's building blocks: memtable insert/get, block encode/decode,
//! bloom probe, and a point lookup in one SST through the block cache.
//!
//! `cargo bench --bench engine`; compare runs with criterion's saved baselines
//! (`-- --save-baseline before` / `-- --baseline before`).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lsm::memtable::Memtable;
use lsm::sst::block::{self, BlockBuilder, DecodedBlock};
use lsm::sst::filter::Filter;
use lsm::sst::{filter_hash, Table, TableBuilder};
use lsm::{internal_key, BlockCache, Compression, ValueKind};
use rand::{Rng, SeedableRng};

const N: usize = 100_000;

fn key(i: usize) -> Vec<u8> {
    format!("{i:016}").into_bytes()
}

fn shuffled(n: usize) -> Vec<usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.gen_range(0..=i));
    }
    v
}

fn memtable(c: &mut Criterion) {
    let value = [7u8; 100];
    let order = shuffled(N);
    let mut g = c.benchmark_group("memtable");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("insert_100k_random", |b| {
        b.iter_batched(
            || Memtable::new(0, 64 << 20),
            |m| {
                for (seq, &i) in order.iter().enumerate() {
                    m.insert(&key(i), seq as u64 + 1, ValueKind::Put, &value);
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    let m = Memtable::new(0, 64 << 20);
    for (seq, &i) in order.iter().enumerate() {
        m.insert(&key(i), seq as u64 + 1, ValueKind::Put, &value);
    }
    g.bench_function("get_100k_random", |b| {
        b.iter(|| {
            for &i in &order {
                black_box(m.get(&key(i), u64::MAX >> 8));
            }
        })
    });
    g.finish();
}

fn sample_block() -> Vec<u8> {
    let mut b = BlockBuilder::new(16);
    for i in 0..35 {
        b.add(&internal_key(&key(i), 9, ValueKind::Put), &[3u8; 100]);
    }
    b.finish()
}

fn blocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("block");
    g.bench_function("encode_35x116B", |b| b.iter(|| black_box(sample_block())));
    let raw = Bytes::from(sample_block());
    g.bench_function("decode_35x116B", |b| {
        b.iter(|| black_box(DecodedBlock::decode(raw.clone())))
    });
    let target = internal_key(&key(20), 9, ValueKind::Put);
    g.bench_function("seek", |b| b.iter(|| black_box(block::seek(&raw, &target))));
    let compressed = lz4_block(&raw);
    g.bench_function("lz4_decompress_4k", |b| {
        b.iter(|| black_box(lz4_flex::block::decompress(&compressed, raw.len())))
    });
    g.finish();
}

fn lz4_block(raw: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress(raw)
}

fn bloom(c: &mut Criterion) {
    let hashes: Vec<u64> = (0..N).map(|i| filter_hash(&key(i))).collect();
    let f = Filter::parse(&Filter::build(&hashes, 0.01)).expect("valid filter");
    let misses: Vec<u64> = (N..2 * N).map(|i| filter_hash(&key(i))).collect();
    let mut g = c.benchmark_group("bloom");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("probe_hit_100k", |b| {
        b.iter(|| hashes.iter().filter(|&&h| f.may_contain(h)).count())
    });
    g.bench_function("probe_miss_100k", |b| {
        b.iter(|| misses.iter().filter(|&&h| f.may_contain(h)).count())
    });
    g.finish();
}

fn sst_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("000001.sst");
    let mut tb = TableBuilder::create(&path, 4096, 16, Compression::Lz4, 0.01).expect("create");
    for i in 0..N {
        tb.add(&internal_key(&key(i), 1, ValueKind::Put), &[5u8; 100])
            .expect("add");
    }
    tb.finish().expect("finish");
    let table = Table::open(&path, 1, BlockCache::new(64 << 20), 1).expect("open");
    let order = shuffled(N);
    let mut g = c.benchmark_group("sst");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("point_lookup_100k_cached", |b| {
        b.iter(|| {
            for &i in &order {
                let k = key(i);
                let seek = internal_key(&k, u64::MAX >> 8, ValueKind::Put);
                black_box(table.get(&k, &seek).expect("get"));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, memtable, blocks, bloom, sst_lookup);
criterion_main!(benches);

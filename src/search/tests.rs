//! Disk search end to end on a seeded 20K-point index: recall with both
//! readers, identical answers, corruption detected.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::*;
use crate::index::build::{BuildOptions, build_index};
use crate::synth::{Mixture, STREAM_BASE, STREAM_QUERIES, write_stream};
use crate::vamana::BuildParams;
use crate::vecfile::VectorFile;

const N: u64 = 20_000;
const DIM: usize = 48;
const NQ: u64 = 100;

struct Fixture {
    _dir: tempfile::TempDir,
    index: PathBuf,
    queries: Vec<f32>,
    truth: Vec<Vec<(u32, f32)>>,
}

/// Builds the shared index once per test binary.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let m = Mixture::new(DIM, 24, 5).unwrap();
        let base = dir.path().join("base.fbin");
        let qp = dir.path().join("q.fbin");
        write_stream::<f32>(&m, &base, N, 5, STREAM_BASE, &|_| {}).unwrap();
        write_stream::<f32>(&m, &qp, NQ, 5, STREAM_QUERIES, &|_| {}).unwrap();
        let index = dir.path().join("idx");
        let opts = BuildOptions {
            graph: BuildParams { degree_max: 32, list_size: 64, ..Default::default() },
            pq_chunks: 16,
            ..Default::default()
        };
        build_index(&base, &index, &opts, &()).unwrap();
        let b = VectorFile::open(&base).unwrap().read_all::<f32>().unwrap();
        let queries = VectorFile::open(&qp).unwrap().read_all::<f32>().unwrap();
        let truth = crate::groundtruth::brute_force_scalar(&b, &queries, DIM, 10, Metric::L2);
        Fixture { _dir: dir, index, queries, truth }
    })
}

fn run_all(index: &Index, params: &SearchParams) -> (Vec<SearchResult>, f64) {
    let f = fixture();
    let mut s = index.searcher().unwrap();
    let mut hits = 0;
    let mut out = Vec::new();
    for (q, t) in f.queries.chunks_exact(DIM).zip(&f.truth) {
        let r = index.search(&mut s, q, params).unwrap();
        hits += t.iter().filter(|(id, _)| r.ids.contains(id)).count();
        out.push(r);
    }
    (out, hits as f64 / (f.truth.len() * 10) as f64)
}

/// Both readers reach recall@10 >= 0.95 and return identical results (the
/// round-based search: its order does not depend on when reads land).
#[test]
fn both_readers_reach_recall_and_agree() {
    let f = fixture();
    let params = SearchParams { k: 10, list_size: 64, beam_width: 4 };
    let open = |reader| {
        let opts = OpenOptions { reader, search_mode: SearchMode::Rounds, ..Default::default() };
        Index::open(&f.index, &opts).unwrap()
    };
    let (uring, pread) = (open(ReaderKind::Uring), open(ReaderKind::Pread));
    assert_eq!(uring.reader_kind(), ReaderKind::Uring);
    assert_eq!(pread.reader_kind(), ReaderKind::Pread);
    let (ru, recall_u) = run_all(&uring, &params);
    let (rp, recall_p) = run_all(&pread, &params);
    assert!(recall_u >= 0.95, "uring recall@10 {recall_u}");
    assert!(recall_p >= 0.95, "pread recall@10 {recall_p}");
    for (a, b) in ru.iter().zip(&rp) {
        assert_eq!(a.ids, b.ids);
        assert_eq!(a.distances, b.distances);
        assert_eq!(a.stats.sector_reads, b.stats.sector_reads);
    }
    // Distances are exact (rerank): they equal the true distance of the id.
    let data = f.truth[0][0];
    assert!((ru[0].distances[0] - data.1).abs() <= 1e-3 * data.1.max(1.0));
}

/// The entry cache saves reads without changing answers; more L means more recall.
#[test]
fn cache_saves_reads_and_l_trades_recall() {
    let f = fixture();
    let params = SearchParams { k: 10, list_size: 32, beam_width: 4 };
    let rounds = OpenOptions { search_mode: SearchMode::Rounds, ..Default::default() };
    let plain = Index::open(&f.index, &rounds).unwrap();
    let cached =
        Index::open(&f.index, &OpenOptions { cache_nodes: 500, ..rounds.clone() }).unwrap();
    assert_eq!(cached.cache_len(), 500);
    let (a, r32) = run_all(&plain, &params);
    let (b, _) = run_all(&cached, &params);
    let reads = |v: &[SearchResult]| v.iter().map(|r| r.stats.sector_reads).sum::<u64>();
    assert!(reads(&b) < reads(&a), "cache must save reads: {} vs {}", reads(&b), reads(&a));
    assert!(b.iter().all(|r| r.stats.cache_hits > 0));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.ids, y.ids);
    }
    let (_, r128) = run_all(&plain, &SearchParams { list_size: 128, ..params });
    assert!(r128 >= r32, "recall must not drop with L: {r32} -> {r128}");
}

/// Bad queries and parameters are errors.
#[test]
fn bad_queries_are_errors() {
    let f = fixture();
    let index = Index::open(&f.index, &OpenOptions::default()).unwrap();
    let mut s = index.searcher().unwrap();
    let p = SearchParams { k: 10, list_size: 20, beam_width: 4 };
    assert!(index.search(&mut s, &[0.0; 3], &p).is_err());
    let mut q = vec![0.0; DIM];
    q[3] = f32::NAN;
    assert!(index.search(&mut s, &q, &p).is_err());
    let q = vec![0.0; DIM];
    assert!(index.search(&mut s, &q, &SearchParams { k: 0, ..p }).is_err());
    assert!(index.search(&mut s, &q, &SearchParams { list_size: 5, ..p }).is_err());
    assert!(index.search(&mut s, &q, &SearchParams { beam_width: 65, ..p }).is_err());
}

/// A flipped byte in a record gives a clear error naming the node, never a wrong answer.
#[test]
fn corrupted_sector_is_an_error() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("idx");
    std::fs::create_dir_all(copy.join("gen-0")).unwrap();
    for name in ["manifest", "gen-0/graph", "gen-0/pq", "gen-0/codes", "gen-0/hot"] {
        std::fs::copy(f.index.join(name), copy.join(name)).unwrap();
    }
    let index = Index::open(&copy, &OpenOptions::default()).unwrap();
    let medoid = index.header().medoid;
    let at = index.layout().record_offset(medoid) + 5;
    drop(index);
    let gp = copy.join("gen-0/graph");
    let mut bytes = std::fs::read(&gp).unwrap();
    bytes[at as usize] ^= 0x01;
    std::fs::write(&gp, &bytes).unwrap();
    for reader in [ReaderKind::Uring, ReaderKind::Pread] {
        for search_mode in [SearchMode::Rounds, SearchMode::Pipelined] {
            let opts = OpenOptions { reader, search_mode, ..Default::default() };
            let index = Index::open(&copy, &opts).unwrap();
            let mut s = index.searcher().unwrap();
            let p = SearchParams { k: 10, list_size: 20, beam_width: 4 };
            let e = index.search(&mut s, &f.queries[..DIM], &p).unwrap_err().to_string();
            assert!(e.contains(&format!("node {medoid}")) && e.contains("checksum"), "{e}");
            // Nothing is left in flight behind the error.
            assert_eq!(s.reader.pending(), 0, "{reader} {search_mode}");
        }
    }
    // A corrupt record several hops in, found while other reads are in
    // flight (W 8): the pipelined search reports it and leaves nothing in
    // flight behind it, and the searcher answers the next query.
    let clean = Index::open(&f.index, &OpenOptions::default()).unwrap();
    let mut s = clean.searcher().unwrap();
    let p = SearchParams { k: 10, list_size: 40, beam_width: 8 };
    let q0 = &f.queries[..DIM];
    // The record expanded half-way through the query, when the width has
    // grown and reads are in flight.
    let mut order = Vec::new();
    let mut visit = |id: u32, _: f32, _: &[f32]| order.push(id);
    let mut hooks = SearchHooks { visit: Some(&mut visit), ..Default::default() };
    clean.search_with(&mut s, q0, &p, &mut hooks).unwrap();
    let deep = order[order.len() / 2];
    assert_ne!(deep, medoid);
    std::fs::write(&gp, std::fs::read(f.index.join("gen-0/graph")).unwrap()).unwrap();
    let at = clean.layout().record_offset(deep) + 5;
    let mut bytes = std::fs::read(&gp).unwrap();
    bytes[at as usize] ^= 0x01;
    std::fs::write(&gp, &bytes).unwrap();
    let index = Index::open(&copy, &OpenOptions::default()).unwrap();
    let mut s = index.searcher().unwrap();
    let e = index.search(&mut s, q0, &p).unwrap_err().to_string();
    assert!(e.contains(&format!("node {deep}")) && e.contains("checksum"), "{e}");
    assert_eq!(s.reader.pending(), 0);
    // Query 1 may or may not pass through the bad record; either way the
    // searcher works (no read of the last query is left behind).
    let r = index.search(&mut s, &f.queries[DIM..2 * DIM], &p);
    assert!(r.is_ok() || r.unwrap_err().to_string().contains(&format!("node {deep}")));
    assert_eq!(s.reader.pending(), 0);
    std::fs::write(&gp, std::fs::read(f.index.join("gen-0/graph")).unwrap()).unwrap();
    let mut bytes = std::fs::read(&gp).unwrap();
    let at = index.layout().record_offset(medoid) + 5;
    bytes[at as usize] ^= 0x01;
    std::fs::write(&gp, &bytes).unwrap();
    drop(index);
    // With a cache the corrupt record is found at open.
    let e =
        Index::open(&copy, &OpenOptions { cache_nodes: 10, ..Default::default() }).err().unwrap();
    assert!(e.to_string().contains("checksum"));
    // verify names the node and sector too.
    let e = crate::index::verify::verify_index(&copy).unwrap_err().to_string();
    assert!(e.contains(&format!("node {medoid}")) && e.contains("sector"), "{e}");
}

/// One Index searched from several threads at once answers exactly as one thread does.
#[test]
fn concurrent_searches_agree_with_sequential() {
    // Pipelined over pread is deterministic too (every read lands at once).
    let opts = OpenOptions { cache_nodes: 100, ..Default::default() };
    let pipe_pread = OpenOptions { reader: ReaderKind::Pread, ..opts.clone() };
    for opts in [OpenOptions { search_mode: SearchMode::Rounds, ..opts.clone() }, pipe_pread] {
        concurrent_agree(&opts);
    }
}

fn concurrent_agree(opts: &OpenOptions) {
    let f = fixture();
    let index = Index::open(&f.index, opts).unwrap();
    let params = SearchParams { k: 10, list_size: 40, beam_width: 4 };
    let (seq, _) = run_all(&index, &params);
    let par: Vec<Vec<(usize, Vec<u32>)>> = std::thread::scope(|sc| {
        (0..4)
            .map(|t| {
                let index = &index;
                sc.spawn(move || {
                    let mut s = index.searcher().unwrap();
                    (t..NQ as usize)
                        .step_by(4)
                        .map(|i| {
                            let q = &f.queries[i * DIM..(i + 1) * DIM];
                            (i, index.search(&mut s, q, &params).unwrap().ids)
                        })
                        .collect()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    let mut n = 0;
    for (i, ids) in par.into_iter().flatten() {
        assert_eq!(ids, seq[i].ids, "query {i}");
        n += 1;
    }
    assert_eq!(n, NQ as usize);
}

/// Inner product and cosine indexes answer by their own metric: recall@10
/// against a scalar brute force of that metric is >= 0.9 at L = 64.
#[test]
fn inner_product_and_cosine_indexes_reach_recall() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 24;
    let m = Mixture::new(dim, 8, 9).unwrap();
    let base = dir.path().join("b.fbin");
    write_stream::<f32>(&m, &base, 5_000, 9, STREAM_BASE, &|_| {}).unwrap();
    let b = VectorFile::open(&base).unwrap().read_all::<f32>().unwrap();
    let queries = m.block::<f32>(9, STREAM_QUERIES, 0, 50);
    for metric in [Metric::InnerProduct, Metric::Cosine] {
        let index_dir = dir.path().join(metric.name());
        let opts = BuildOptions {
            metric,
            graph: BuildParams { degree_max: 24, list_size: 48, ..Default::default() },
            pq_chunks: 12,
            ..Default::default()
        };
        build_index(&base, &index_dir, &opts, &()).unwrap();
        let index = Index::open(&index_dir, &OpenOptions::default()).unwrap();
        let mut s = index.searcher().unwrap();
        let truth = crate::groundtruth::brute_force_scalar(&b, &queries, dim, 10, metric);
        let params = SearchParams { k: 10, list_size: 64, beam_width: 4 };
        let mut hits = 0;
        for (q, t) in queries.chunks_exact(dim).zip(&truth) {
            let r = index.search(&mut s, q, &params).unwrap();
            hits += t.iter().filter(|(id, _)| r.ids.contains(id)).count();
            // Reported distances are the metric's own (cosine: 1 - cos).
            let d0 = Distance::<f32>::new(metric).eval(q, &b[r.ids[0] as usize * dim..][..dim]);
            assert!((r.distances[0] - d0).abs() <= 1e-3 * d0.abs().max(1.0), "{metric}");
        }
        let recall = hits as f64 / (truth.len() * 10) as f64;
        assert!(recall >= 0.9, "{metric} recall@10 = {recall}");
    }
}

/// Queries for u8 and i8 indexes must be integers within the type's range:
/// anything else is an error naming the first bad position, never rounded or
/// clamped. A query whose squared norm could overflow a distance is refused
/// for every type.
#[test]
fn integer_queries_are_not_converted_silently() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 8;
    for dtype in [ElementType::U8, ElementType::I8] {
        let m = Mixture::new(dim, 4, 3).unwrap();
        let base = dir.path().join(format!("b.{dtype}bin"));
        crate::with_element!(dtype, T => {
            write_stream::<T>(&m, &base, 300, 3, STREAM_BASE, &|_| {}).unwrap()
        });
        let idx = dir.path().join(dtype.name());
        let opts = BuildOptions {
            graph: BuildParams { degree_max: 8, list_size: 16, ..Default::default() },
            pq_chunks: 4,
            ..Default::default()
        };
        build_index(&base, &idx, &opts, &()).unwrap();
        let index = Index::open(&idx, &OpenOptions::default()).unwrap();
        let mut s = index.searcher().unwrap();
        let p = SearchParams { k: 5, list_size: 16, beam_width: 4 };
        let good = vec![3.0f32; dim];
        assert_eq!(index.search(&mut s, &good, &p).unwrap().ids.len(), 5);
        let (lo, hi) = if dtype == ElementType::U8 { (-1.0, 256.0) } else { (-129.0, 128.0) };
        for (pos, bad) in [(2usize, 1.5f32), (5, lo), (7, hi), (0, f32::INFINITY)] {
            let mut q = good.clone();
            q[pos] = bad;
            let e = index.search(&mut s, &q, &p).unwrap_err().to_string();
            assert!(e.contains(&format!("value {pos} is")), "{dtype} {bad}: {e}");
            assert!(e.contains(dtype.name()) || bad.is_infinite(), "{dtype} {bad}: {e}");
        }
    }
    // f32: a norm past NORM_SQUARED_MAX is refused.
    let f = fixture();
    let index = Index::open(&f.index, &OpenOptions::default()).unwrap();
    let mut s = index.searcher().unwrap();
    let q = vec![1e19f32; DIM];
    let e = index.search(&mut s, &q, &SearchParams { k: 10, list_size: 20, beam_width: 4 });
    assert!(e.unwrap_err().to_string().contains("NORM_SQUARED_MAX"));
}

/// Inner product when points are longer than the index's M (what a merge
/// inserting new, longer points into an existing space meets): the build
/// places them with an extra coordinate of 0 and counts them, never
/// silently; the same points in a space whose M covers them (what the merge
/// rebuilds when it finds any) are searched at full recall. Prints both.
#[test]
fn ip_points_longer_than_m_are_counted_and_a_wider_space_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 24;
    let m = Mixture::new(dim, 8, 21).unwrap();
    let mut rows = m.block::<f32>(21, STREAM_BASE, 0, 4000);
    let norm = |r: &[f32]| r.iter().map(|x| x * x).sum::<f32>().sqrt();
    let old_max = rows.chunks(dim).take(3600).map(norm).fold(0.0f32, f32::max);
    // The last 400 rows arrive later and are longer: 1.2x to 1.6x.
    for (i, r) in rows.chunks_mut(dim).enumerate().skip(3600) {
        let s = 1.2 + 0.4 * ((i % 7) as f32 / 6.0);
        r.iter_mut().for_each(|x| *x *= s);
    }
    // Counted as the build decides: squared norm against M squared.
    let longer = rows
        .chunks(dim)
        .filter(|r| r.iter().map(|x| x * x).sum::<f32>() > old_max * old_max)
        .count() as u64;
    assert!(longer > 100, "{longer}");
    let base = dir.path().join("b.fbin");
    let mut w = crate::vecfile::VectorWriter::<f32>::create(&base, dim).unwrap();
    w.append(&rows).unwrap();
    w.finish().unwrap();
    let queries = m.block::<f32>(21, STREAM_QUERIES, 0, 100);
    let truth =
        crate::groundtruth::brute_force_scalar(&rows, &queries, dim, 10, Metric::InnerProduct);
    let mut recall = Vec::new();
    for given in [Some(old_max), None] {
        let idx = dir.path().join(format!("{given:?}"));
        let opts = BuildOptions {
            metric: Metric::InnerProduct,
            graph: BuildParams { degree_max: 24, list_size: 48, ..Default::default() },
            pq_chunks: 12,
            ip_norm_max: given,
            ..Default::default()
        };
        let summary = build_index(&base, &idx, &opts, &()).unwrap();
        assert_eq!(summary.over_norm_rows, if given.is_some() { longer } else { 0 });
        let index = Index::open(&idx, &OpenOptions::default()).unwrap();
        assert_eq!(index.header().ip_norm_max, summary.ip_norm_max, "M is persisted");
        let mut s = index.searcher().unwrap();
        let params = SearchParams { k: 10, list_size: 48, beam_width: 4 };
        let mut hits = 0;
        for (q, t) in queries.chunks_exact(dim).zip(&truth) {
            let r = index.search(&mut s, q, &params).unwrap();
            hits += t.iter().filter(|(id, _)| r.ids.contains(id)).count();
        }
        recall.push(hits as f64 / 1000.0);
    }
    eprintln!(
        "ip recall@10 at L=48: M too small {:.3}, M covering every point {:.3}",
        recall[0], recall[1]
    );
    assert!(recall[1] >= 0.9, "{recall:?}");
}

/// The hot-list cache (nodes sample queries expanded most) saves more reads
/// than a breadth-first cache of the same size, with the same answers; a
/// byte budget bounds the cache by its records' size.
#[test]
fn hot_cache_saves_more_than_bfs_and_byte_budgets_bound_it() {
    let f = fixture();
    let params = SearchParams { k: 10, list_size: 48, beam_width: 4 };
    let open = |policy, nodes, bytes| {
        let o = OpenOptions {
            cache_nodes: nodes,
            cache_bytes: bytes,
            cache_policy: policy,
            // Identical answers need an order independent of the device.
            search_mode: SearchMode::Rounds,
            ..Default::default()
        };
        Index::open(&f.index, &o).unwrap()
    };
    let bfs = open(CachePolicy::Bfs, 1000, None);
    let hot = open(CachePolicy::Hot, 1000, None);
    assert_eq!((bfs.cache_len(), hot.cache_len()), (1000, 1000));
    let (a, _) = run_all(&bfs, &params);
    let (b, _) = run_all(&hot, &params);
    let reads = |v: &[SearchResult]| v.iter().map(|r| r.stats.sector_reads).sum::<u64>();
    assert!(reads(&b) < reads(&a), "hot {} vs bfs {}", reads(&b), reads(&a));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.ids, y.ids);
    }
    let record = u64::from(hot.layout().record_bytes) + CACHE_ENTRY_OVERHEAD_BYTES;
    let budget = open(CachePolicy::Hot, 0, Some(record * 300 + record / 2));
    assert_eq!(budget.cache_len(), 300);
    let both = open(CachePolicy::Hot, 100, Some(record * 300));
    assert_eq!(both.cache_len(), 100);
}

/// The in-memory mode loads every record, reads nothing, returns exact
/// distances (the disk search's reranked ones for the same ids), reaches
/// at least the disk search's recall at equal L with either steering (8-bit
/// steering within 0.01 of exact), and honours the accept hook and slot
/// scoring.
#[test]
fn in_memory_mode_searches_without_reads() {
    let f = fixture();
    let rounds = OpenOptions { search_mode: SearchMode::Rounds, ..Default::default() };
    let disk = Index::open(&f.index, &rounds).unwrap();
    let open = |steer| {
        let o = OpenOptions { in_memory: true, in_memory_steer: steer, ..Default::default() };
        Index::open(&f.index, &o).unwrap()
    };
    let (exact, sq8) = (open(MemSteer::Exact), open(MemSteer::Sq8));
    assert!(exact.in_memory() && sq8.in_memory() && !disk.in_memory());
    assert_eq!(exact.in_memory_steer(), Some(MemSteer::Exact));
    assert_eq!(sq8.in_memory_steer(), Some(MemSteer::Sq8));
    assert_eq!(exact.in_memory_bytes(), N * (DIM as u64 * 4 + 4 * 32 + 2));
    assert_eq!(sq8.in_memory_bytes(), N * (DIM as u64 * 5 + 4 + 4 * 32 + 2));
    for l in [16, 32, 64] {
        let params = SearchParams { k: 10, list_size: l, beam_width: 4 };
        let (rd, recall_d) = run_all(&disk, &params);
        for mem in [&exact, &sq8] {
            let steer = mem.in_memory_steer().unwrap();
            let (rm, recall_m) = run_all(mem, &params);
            assert!(recall_m >= recall_d, "L {l} {steer}: in memory {recall_m} < disk {recall_d}");
            assert!(rm.iter().all(|r| r.stats.sector_reads == 0));
            assert!(rm.iter().all(|r| (r.stats.pq_distances > 0) == (steer == MemSteer::Sq8)));
            assert!(rm.iter().all(|r| r.ids.len() == 10 && r.stats.rounds > 0));
            // Where both found a node, both give it the same exact distance.
            for (a, b) in rd.iter().zip(&rm) {
                for (id, d) in a.ids.iter().zip(&a.distances) {
                    if let Some(j) = b.ids.iter().position(|x| x == id) {
                        assert_eq!(*d, b.distances[j], "node {id} ({steer})");
                    }
                }
                assert!(b.distances.is_sorted(), "{steer}: {:?}", b.distances);
            }
            if l == 64 {
                assert!(recall_m >= 0.98, "in-memory recall@10 at L 64 ({steer}): {recall_m}");
            }
        }
        let (_, recall_e) = run_all(&exact, &params);
        let (_, recall_q) = run_all(&sq8, &params);
        assert!(recall_q >= recall_e - 0.01, "L {l}: sq8 {recall_q} vs exact {recall_e}");
    }
    for mem in [&exact, &sq8] {
        // The accept hook: only even ids come back, with exact distances.
        let mut s = mem.searcher().unwrap();
        let even = |id: u32| id.is_multiple_of(2);
        let mut hooks = SearchHooks { accept: Some(&even), ..Default::default() };
        let params = SearchParams { k: 10, list_size: 40, beam_width: 4 };
        let q = &f.queries[..DIM];
        let r = mem.search_with(&mut s, q, &params, &mut hooks).unwrap();
        assert_eq!(r.ids.len(), 10);
        assert!(r.ids.iter().all(|id| id.is_multiple_of(2)), "{:?}", r.ids);
        let mut sd = disk.searcher().unwrap();
        let d = disk.search_slots(&mut sd, q, &r.ids, 10, r.ids.len()).unwrap();
        assert_eq!((&d.ids, &d.distances), (&r.ids, &r.distances));
        // Slot scoring reads nothing and matches the disk's exact answer.
        let slots: Vec<u32> = (0..2000).collect();
        let a = disk.search_slots(&mut sd, q, &slots, 10, 2000).unwrap();
        let b = mem.search_slots(&mut s, q, &slots, 10, 2000).unwrap();
        assert_eq!(a.ids, b.ids);
        assert_eq!(b.stats.sector_reads, 0);
    }
}

/// The in-memory mode refuses a budget it does not fit, and a corrupt
/// record anywhere fails the load (naming the node), not a later search.
#[test]
fn in_memory_mode_checks_its_budget_and_every_record() {
    let f = fixture();
    // The default steering keeps 8-bit rows beside the vectors.
    let need = N * (DIM as u64 * 5 + 4 + 4 * 32 + 2);
    let small =
        OpenOptions { in_memory: true, in_memory_bytes_max: Some(need - 1), ..Default::default() };
    let e = Index::open(&f.index, &small).err().unwrap().to_string();
    assert!(e.contains(&format!("needs {need} bytes")), "{e}");
    assert!(e.contains(&format!("but {} bytes", need - 1)), "{e}");
    let exact = OpenOptions { in_memory_bytes_max: Some(need), ..small.clone() };
    assert!(Index::open(&f.index, &exact).is_ok());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("idx");
    std::fs::create_dir_all(copy.join("gen-0")).unwrap();
    for name in ["manifest", "gen-0/graph", "gen-0/pq", "gen-0/codes", "gen-0/hot"] {
        std::fs::copy(f.index.join(name), copy.join(name)).unwrap();
    }
    let victim = N as u32 - 7;
    let at = Index::open(&copy, &OpenOptions::default()).unwrap().layout().record_offset(victim);
    let gp = copy.join("gen-0/graph");
    let mut bytes = std::fs::read(&gp).unwrap();
    bytes[at as usize + 3] ^= 0x10;
    std::fs::write(&gp, &bytes).unwrap();
    let e = Index::open(&copy, &OpenOptions { in_memory: true, ..Default::default() })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&format!("node {victim}")) && e.contains("checksum"), "{e}");
}

/// The pipelined search over both readers: recall@10 >= 0.95 at L = 64
/// like the round-based search, with at most 15% more reads (those issued
/// for candidates that leave the best L before they land), exact and sorted
/// distances; over pread (each read lands at once) it is deterministic, and
/// wasted reads are counted, never negative work.
#[test]
fn pipelined_search_reaches_recall_with_both_readers() {
    let f = fixture();
    let params = SearchParams { k: 10, list_size: 64, beam_width: 8 };
    let open = |reader, search_mode| {
        let opts = OpenOptions { reader, search_mode, cache_nodes: 200, ..Default::default() };
        Index::open(&f.index, &opts).unwrap()
    };
    let reads = |v: &[SearchResult]| v.iter().map(|r| r.stats.sector_reads).sum::<u64>();
    let (rr, recall_rounds) = run_all(&open(ReaderKind::Uring, SearchMode::Rounds), &params);
    for reader in [ReaderKind::Uring, ReaderKind::Pread] {
        let index = open(reader, SearchMode::Pipelined);
        assert_eq!(index.search_mode(), SearchMode::Pipelined);
        let (rp, recall) = run_all(&index, &params);
        assert!(recall >= 0.95, "{reader}: pipelined recall@10 {recall}");
        assert!(
            recall >= recall_rounds - 0.02,
            "{reader}: pipelined recall {recall}, rounds {recall_rounds}"
        );
        let (a, b) = (reads(&rp), reads(&rr));
        assert!(a as f64 <= 1.15 * b as f64, "{reader}: pipelined read {a} sectors, rounds {b}");
        for r in &rp {
            assert!(r.distances.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(r.ids.len(), 10);
            let records = r.stats.sector_reads / u64::from(index.layout().sectors_per_record);
            assert!(r.stats.wasted_reads <= records);
            assert!(r.stats.cache_hits > 0);
        }
        if reader == ReaderKind::Pread {
            let (again, _) = run_all(&index, &params);
            for (x, y) in rp.iter().zip(&again) {
                assert_eq!((&x.ids, x.stats.sector_reads), (&y.ids, y.stats.sector_reads));
                // One record at a time: nothing is ever waited for.
                assert_eq!(x.stats.rounds, 0);
            }
        }
    }
    // The width is capped by the caller's W: W = 1 over io_uring is the
    // same one-at-a-time best-first order as pread's.
    let one = SearchParams { beam_width: 1, ..params };
    let (u1, _) = run_all(&open(ReaderKind::Uring, SearchMode::Pipelined), &one);
    let (p1, _) = run_all(&open(ReaderKind::Pread, SearchMode::Pipelined), &one);
    for (x, y) in u1.iter().zip(&p1) {
        assert_eq!((&x.ids, x.stats.sector_reads), (&y.ids, y.stats.sector_reads));
        assert_eq!(x.stats.wasted_reads, 0);
    }
}

/// A packed placement (`index::placement`) walks the same graph as row
/// order, numbered apart: with one build thread both builds make the same
/// graph, so the searches expand the same nodes, but the packed one reads
/// fewer sectors (the records it reaches are in sectors it has kept) and
/// reranks every record of those sectors, so its answers are never worse.
/// Checked with both searches over pread (a deterministic order) and the
/// pipelined one over io_uring.
#[test]
fn packed_placement_answers_no_worse_with_fewer_reads() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.fbin");
    let m = Mixture::new(DIM, 24, 5).unwrap();
    write_stream::<f32>(&m, &base, 8_000, 5, STREAM_BASE, &|_| {}).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let build = |name: &str, placement| {
        let out = dir.path().join(name);
        let opts = BuildOptions {
            graph: BuildParams { degree_max: 32, list_size: 64, ..Default::default() },
            pq_chunks: 16,
            placement,
            ..Default::default()
        };
        pool.install(|| build_index(&base, &out, &opts, &())).unwrap();
        out
    };
    use crate::format::graph::Placement;
    let (row_dir, packed_dir) =
        (build("rows", Placement::RowOrder), build("packed", Placement::Packed));
    let params = SearchParams { k: 10, list_size: 48, beam_width: 4 };
    for (reader, mode) in [
        (ReaderKind::Pread, SearchMode::Rounds),
        (ReaderKind::Pread, SearchMode::Pipelined),
        (ReaderKind::Uring, SearchMode::Pipelined),
    ] {
        let opts = OpenOptions { reader, search_mode: mode, ..Default::default() };
        let (rows_ix, packed_ix) =
            (Index::open(&row_dir, &opts).unwrap(), Index::open(&packed_dir, &opts).unwrap());
        assert_eq!(rows_ix.header().placement, Placement::RowOrder);
        assert_eq!(packed_ix.header().placement, Placement::Packed);
        assert!(rows_ix.rows().unwrap().is_none());
        let rows = packed_ix.rows().unwrap().expect("a packed index maps nodes to rows");
        let mut sorted = rows.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..8_000).collect::<Vec<u32>>(), "rows are a permutation");
        let (mut sa, mut sb) = (rows_ix.searcher().unwrap(), packed_ix.searcher().unwrap());
        let (mut ra, mut rb) = (QueryStats::default(), QueryStats::default());
        let (mut no_worse, mut hits, mut found_a, mut found_b) = (0, 0, 0, 0);
        for q in f.queries.chunks_exact(DIM) {
            let a = rows_ix.search(&mut sa, q, &params).unwrap();
            let b = packed_ix.search(&mut sb, q, &params).unwrap();
            let b_rows: Vec<u32> = b.ids.iter().map(|&id| rows[id as usize]).collect();
            // The packed search reranks a superset of the same records: its
            // i-th distance is never worse.
            no_worse += usize::from(
                a.distances.len() == b.distances.len()
                    && a.distances.iter().zip(&b.distances).all(|(x, y)| y <= x),
            );
            hits += a.ids.iter().filter(|id| b_rows.contains(id)).count();
            found_a += a.ids.len();
            found_b += b_rows.len();
            ra.add(&a.stats);
            rb.add(&b.stats);
        }
        let nq = f.queries.len() / DIM;
        let what = format!("{reader:?} {mode:?}: row order {ra:?}\npacked {rb:?}");
        assert_eq!((found_a, found_b), (nq * 10, nq * 10), "{what}");
        let expansions = |x: &QueryStats| x.sector_reads + x.sector_hits + x.cache_hits;
        if reader == ReaderKind::Pread {
            // The same expansions: the same records reached, read or not.
            assert_eq!(expansions(&ra), expansions(&rb), "{what}");
            assert_eq!(no_worse, nq, "{what}");
        } else {
            assert!(no_worse as f64 >= 0.9 * nq as f64, "{no_worse} of {nq} no worse; {what}");
        }
        assert!(hits as f64 >= 0.95 * (nq * 10) as f64, "{hits} common answers; {what}");
        assert!(rb.sector_hits > 0, "{what}");
        if mode == SearchMode::Rounds {
            // A cache of whole sectors changes the reads, not the answers
            // (a cached sector's records are reranked as a read one's).
            // A byte budget buys whole sectors (12 records each here).
            let per = (crate::format::SECTOR_BYTES as u64 + CACHE_ENTRY_OVERHEAD_BYTES) * 10;
            let o = OpenOptions { cache_bytes: Some(per), ..opts };
            let small = Index::open(&packed_dir, &o).unwrap();
            assert_eq!(small.cache_len(), 10 * packed_ix.layout().records_per_sector as usize);
            let o = OpenOptions { cache_nodes: 4_000, ..opts };
            let cached = Index::open(&packed_dir, &o).unwrap();
            assert!(cached.cache_len() >= 4_000 && cached.cache_len() < 4_000 + 12);
            let mut sc = cached.searcher().unwrap();
            let mut saved = 0;
            for q in f.queries.chunks_exact(DIM) {
                let x = packed_ix.search(&mut sb, q, &params).unwrap();
                let y = cached.search(&mut sc, q, &params).unwrap();
                assert_eq!((&x.ids, &x.distances), (&y.ids, &y.distances));
                // Every record of every sector touched is scored either way.
                assert_eq!(x.stats.exact_distances, y.stats.exact_distances);
                saved += x.stats.sector_reads - y.stats.sector_reads;
            }
            assert!(saved > 0);
        }
        assert!(
            (rb.sector_reads as f64) < 0.8 * ra.sector_reads as f64,
            "packed reads {} vs row order {}; {what}",
            rb.sector_reads,
            ra.sector_reads
        );
    }
}

/// Queries interleaved on one thread (`search_interleaved`) get the answers
/// they get alone: over pread (a deterministic order) every answer and
/// count is identical, in row order and packed (kept sectors, riders),
/// whatever the number of lanes; over io_uring, where when reads land
/// steers each pipelined search, the answers agree as closely as two
/// single runs do. Bad parameters and a bad query are errors, and the
/// searcher is usable after one.
#[test]
fn interleaved_queries_answer_as_they_would_alone() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.fbin");
    let m = Mixture::new(DIM, 24, 5).unwrap();
    write_stream::<f32>(&m, &base, 4_000, 5, STREAM_BASE, &|_| {}).unwrap();
    let packed = dir.path().join("packed");
    let opts = BuildOptions {
        graph: BuildParams { degree_max: 32, list_size: 64, ..Default::default() },
        pq_chunks: 16,
        placement: crate::format::graph::Placement::Packed,
        ..Default::default()
    };
    build_index(&base, &packed, &opts, &()).unwrap();
    let params = SearchParams { k: 10, list_size: 48, beam_width: 8 };
    let nq = f.queries.len() / DIM;
    for (path, reader) in [
        (&f.index, ReaderKind::Pread),
        (&packed, ReaderKind::Pread),
        (&f.index, ReaderKind::Uring),
        (&packed, ReaderKind::Uring),
    ] {
        let opts = OpenOptions {
            reader,
            search_mode: SearchMode::Pipelined,
            cache_nodes: 200,
            ..Default::default()
        };
        let index = Index::open(path, &opts).unwrap();
        let mut s = index.searcher().unwrap();
        let alone: Vec<SearchResult> = f
            .queries
            .chunks_exact(DIM)
            .map(|q| index.search(&mut s, q, &params).unwrap())
            .collect();
        for lanes in [1, 3, 8, INTERLEAVE_MAX] {
            let mut got: Vec<Option<SearchResult>> = vec![None; nq];
            let mut queries = f.queries.chunks_exact(DIM).enumerate();
            let mut next = || queries.next();
            let mut done = |i: usize, r: SearchResult| {
                assert!(got[i].is_none(), "query {i} answered twice");
                got[i] = Some(r);
            };
            index.search_interleaved(&mut s, &params, lanes, &mut next, &mut done).unwrap();
            let got: Vec<SearchResult> =
                got.into_iter().map(|r| r.expect("every query answered")).collect();
            let what = format!("{} {reader:?}, {lanes} lanes", path.display());
            let counts = |r: &SearchResult| {
                let s = r.stats;
                (
                    s.sector_reads,
                    s.sector_hits,
                    s.cache_hits,
                    s.exact_distances,
                    s.pq_distances,
                    s.wasted_reads,
                )
            };
            if reader == ReaderKind::Pread {
                for (i, (a, b)) in alone.iter().zip(&got).enumerate() {
                    assert_eq!((&a.ids, &a.distances), (&b.ids, &b.distances), "q {i}, {what}");
                    assert_eq!(counts(a), counts(b), "q {i}, {what}");
                }
            } else {
                let common: usize = alone
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| a.ids.iter().filter(|id| b.ids.contains(id)).count())
                    .sum();
                assert!(common as f64 >= 0.95 * (nq * 10) as f64, "{common} common; {what}");
                let reads =
                    |v: &[SearchResult]| v.iter().map(|r| r.stats.sector_reads).sum::<u64>();
                let (a, b) = (reads(&alone), reads(&got));
                assert!((b as f64) < 1.15 * a as f64, "reads {b} interleaved, {a} alone; {what}");
            }
        }
        // Errors: the number of lanes, then a bad query in the stream.
        let mut none = || None;
        for lanes in [0, INTERLEAVE_MAX + 1] {
            let e = index.search_interleaved(&mut s, &params, lanes, &mut none, &mut |_, _| {});
            assert!(matches!(e, Err(SearchError::Params(_))), "{lanes} lanes: {e:?}");
        }
        let short = [0.5f32; DIM - 1];
        let mut queries =
            f.queries.chunks_exact(DIM).take(5).chain(std::iter::once(&short[..])).enumerate();
        let mut next = || queries.next();
        let e = index.search_interleaved(&mut s, &params, 4, &mut next, &mut |_, _| {});
        assert!(matches!(e, Err(SearchError::Query(_))), "{e:?}");
        let again = index.search(&mut s, &f.queries[..DIM], &params).unwrap();
        if reader == ReaderKind::Pread {
            assert_eq!(again.ids, alone[0].ids);
        }
        assert_eq!(again.ids.len(), 10);
    }
}

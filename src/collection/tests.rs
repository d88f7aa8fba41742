//! The collection end to end in-process: writes visible at once, replay on
//! reopen, upsert-replaces, deletes, first build and streaming merges
//! (recall against brute force, verify, slot reuse), import, and an index
//! made by `basalt build` opened as a collection.

use std::path::Path;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::*;
use crate::synth::Mixture;

const DIM: usize = 16;

fn config() -> CollectionConfig {
    let mut c = CollectionConfig::new(DIM as u32, Metric::L2, ElementType::F32);
    c.degree_max = 16;
    c.list_size = 40;
    c.pq_chunks = 8;
    c
}

fn open(dir: &Path) -> Arc<Collection> {
    let opts = CollectionOptions { no_auto_merge: true, ..CollectionOptions::default() };
    Collection::open(dir, opts).unwrap()
}

fn data(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let m = Mixture::new(DIM, 8, 3).unwrap();
    let flat: Vec<f32> = m.block::<f32>(seed, 0, 0, n);
    flat.chunks_exact(DIM).map(|c| c.to_vec()).collect()
}

fn points(vs: &[Vec<f32>], first: u64) -> Vec<PointIn> {
    vs.iter()
        .enumerate()
        .map(|(i, v)| PointIn {
            id: ExternalId::Num(first + i as u64),
            vector: v.clone(),
            payload: Some(serde_json::json!({"n": first + i as u64})),
        })
        .collect()
}

fn params(k: usize) -> SearchParams {
    SearchParams { k, list_size: 60, beam_width: 4 }
}

/// recall@10 of the collection against brute force over `live`.
fn recall(c: &Collection, live: &[(u64, Vec<f32>)], queries: &[Vec<f32>]) -> f64 {
    let l2 = crate::distance::Distance::<f32>::new(Metric::L2);
    let mut hit = 0usize;
    for q in queries {
        let mut exact: Vec<(f32, u64)> = live.iter().map(|(id, v)| (l2.eval(q, v), *id)).collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: FxHashSet<u64> = exact.iter().take(10).map(|x| x.1).collect();
        for h in c.search(q, &params(10), false, None).unwrap() {
            if let ExternalId::Num(n) = h.id
                && want.contains(&n)
            {
                hit += 1;
            }
        }
    }
    hit as f64 / (10 * queries.len()) as f64
}

/// An empty collection takes writes at once; they survive a reopen (WAL
/// replay); upsert replaces; deleting a missing id finds nothing.
#[test]
fn empty_collection_writes_replay_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    Collection::create(&p, &config()).unwrap();
    let vs = data(300, 1);
    {
        let c = open(&p);
        assert_eq!(c.count(), 0);
        assert!(c.search(&vs[0], &params(5), false, None).unwrap().is_empty());
        let a = c.upsert(&points(&vs[..200], 0)).unwrap();
        assert_eq!(a.points, 200);
        assert_eq!(c.count(), 200);
        let hits = c.search(&vs[7], &params(1), true, None).unwrap();
        assert_eq!(hits[0].id, ExternalId::Num(7));
        assert_eq!(hits[0].payload.as_deref(), Some("{\"n\":7}"));
        // Replace id 7 with another vector.
        let moved = PointIn { id: ExternalId::Num(7), vector: vs[250].clone(), payload: None };
        c.upsert(&[moved]).unwrap();
        assert_eq!(c.count(), 200);
        let got = c.get(&ExternalId::Num(7)).unwrap().unwrap();
        assert_eq!(got.vector, vs[250]);
        assert_eq!(got.payload, None);
        let hits = c.search(&vs[7], &params(3), false, None).unwrap();
        assert!(hits.iter().all(|h| h.distance > 0.0), "the old vector of 7 is gone");
        assert_eq!(c.delete(&[ExternalId::Num(9), ExternalId::Num(1_000)]).unwrap().points, 1);
        assert!(c.get(&ExternalId::Num(9)).unwrap().is_none());
        assert_eq!(c.count(), 199);
        // Bad input writes nothing.
        let bad = PointIn { id: ExternalId::Num(5), vector: vec![1.0; DIM + 1], payload: None };
        assert!(matches!(c.upsert(&[bad]), Err(CollectionError::Invalid(_))));
        let nan = PointIn { id: ExternalId::Num(5), vector: vec![f32::NAN; DIM], payload: None };
        assert!(matches!(c.upsert(&[nan]), Err(CollectionError::Invalid(_))));
        let arr = PointIn {
            id: ExternalId::Num(5),
            vector: vs[5].clone(),
            payload: Some(serde_json::json!([1])),
        };
        assert!(matches!(c.upsert(&[arr]), Err(CollectionError::Invalid(_))));
        // A second process cannot open it.
        assert!(matches!(
            Collection::open(&p, CollectionOptions::default()),
            Err(CollectionError::Locked(_))
        ));
    }
    let c = open(&p);
    assert_eq!(c.count(), 199);
    assert_eq!(c.get(&ExternalId::Num(7)).unwrap().unwrap().vector, vs[250]);
    assert!(c.get(&ExternalId::Num(9)).unwrap().is_none());
    assert_eq!(c.get(&ExternalId::Num(8)).unwrap().unwrap().vector, vs[8]);
    let ids = c.scroll(None, 5).unwrap();
    assert_eq!(ids, [0, 1, 2, 3, 4].map(ExternalId::Num).to_vec());
    let next = c.scroll(Some(&ExternalId::Num(8)), 2).unwrap();
    assert_eq!(next, vec![ExternalId::Num(10), ExternalId::Num(11)]);
}

/// The first merge builds generation 0; churn merges reuse freed slots,
/// keep every live point findable, never return a deleted one, pass
/// `verify`, and keep recall close to brute force; all of it survives a
/// reopen.
#[test]
fn merges_keep_points_and_recall() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    Collection::create(&p, &config()).unwrap();
    let vs = data(3000, 2);
    let queries = data(40, 99);
    let c = open(&p);
    for chunk in 0..4 {
        let lo = chunk * 500;
        c.upsert(&points(&vs[lo..lo + 500], lo as u64)).unwrap();
    }
    let r = c.merge_now(&merge::NoProgress).unwrap();
    assert_eq!(r.kind, "first build");
    assert_eq!(c.stats().generation, Some(0));
    assert_eq!(c.count(), 2000);
    let mut live: Vec<(u64, Vec<f32>)> = (0..2000).map(|i| (i as u64, vs[i].clone())).collect();
    let r0 = recall(&c, &live, &queries);
    assert!(r0 > 0.9, "recall after the first build {r0}");
    crate::index::verify::verify_index(&p).unwrap();

    // Three churn cycles: delete 10%, insert 10% new, merge.
    let mut next = 2000usize;
    for cycle in 0..3 {
        let del: Vec<ExternalId> =
            live.iter().skip(cycle).step_by(10).map(|(id, _)| ExternalId::Num(*id)).collect();
        let gone: FxHashSet<u64> =
            del.iter().map(|e| if let ExternalId::Num(n) = e { *n } else { 0 }).collect();
        assert_eq!(c.delete(&del).unwrap().points, del.len());
        live.retain(|(id, _)| !gone.contains(id));
        c.upsert(&points(&vs[next..next + 200], next as u64)).unwrap();
        live.extend((next..next + 200).map(|i| (i as u64, vs[i].clone())));
        next += 200;
        // Visible before the merge.
        assert_eq!(c.count(), live.len() as u64);
        let before = c.stats();
        let r = c.merge_now(&merge::NoProgress).unwrap();
        assert_eq!(r.kind, "streaming");
        let after = c.stats();
        assert_eq!(after.generation, Some(cycle as u64 + 1));
        assert_eq!(after.tombstones, 0);
        assert_eq!(after.delta_points, 0);
        // Freed slots were reused: the graph grew by inserts - deletes at most.
        assert!(
            after.disk_slots <= before.disk_slots + 200,
            "{} -> {}",
            before.disk_slots,
            after.disk_slots
        );
        assert_eq!(c.count(), live.len() as u64);
        crate::index::verify::verify_index(&p).unwrap();
        for (id, v) in live.iter().step_by(37) {
            let got = c.get(&ExternalId::Num(*id)).unwrap().unwrap();
            assert_eq!(&got.vector, v, "id {id}");
            assert_eq!(got.payload, Some(format!("{{\"n\":{id}}}")));
        }
        for g in gone.iter().take(20) {
            assert!(c.get(&ExternalId::Num(*g)).unwrap().is_none(), "deleted {g} is back");
        }
        let rc = recall(&c, &live, &queries);
        assert!(rc > r0 - 0.05, "cycle {cycle}: recall {rc} against {r0} after the first build");
        for q in &queries[..10] {
            for h in c.search(q, &params(10), false, None).unwrap() {
                let ExternalId::Num(n) = h.id else { panic!() };
                assert!(!gone.contains(&n), "deleted {n} returned");
            }
        }
    }
    // Old generations' files are gone once nothing holds them.
    assert!(!p.join("gen-0").exists());
    drop(c);
    let c = open(&p);
    assert_eq!(c.count(), live.len() as u64);
    let all = c.scroll(None, SCROLL_LIMIT_MAX).unwrap();
    assert_eq!(all.len(), live.len());
    let mut want: Vec<u64> = live.iter().map(|x| x.0).collect();
    want.sort_unstable();
    assert_eq!(all, want.into_iter().map(ExternalId::Num).collect::<Vec<_>>());
}

/// Writes during a merge land in the fresh delta and are kept; deletes of
/// frozen points during the merge are tombstoned in the new generation.
#[test]
fn writes_during_a_merge_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    Collection::create(&p, &config()).unwrap();
    let vs = data(1600, 5);
    let c = open(&p);
    c.upsert(&points(&vs[..1000], 0)).unwrap();
    c.merge_now(&merge::NoProgress).unwrap();
    c.upsert(&points(&vs[1000..1300], 1000)).unwrap();
    let c2 = Arc::clone(&c);
    let t = std::thread::spawn(move || c2.merge_now(&merge::NoProgress).unwrap());
    // Meanwhile: new points, a delete of a frozen point and of a disk point.
    c.upsert(&points(&vs[1300..1400], 1300)).unwrap();
    c.delete(&[ExternalId::Num(1005), ExternalId::Num(3)]).unwrap();
    t.join().unwrap();
    assert_eq!(c.count(), 1400 - 2);
    assert!(c.get(&ExternalId::Num(1005)).unwrap().is_none());
    assert!(c.get(&ExternalId::Num(3)).unwrap().is_none());
    assert_eq!(c.get(&ExternalId::Num(1350)).unwrap().unwrap().vector, vs[1350]);
    drop(c);
    let c = open(&p);
    assert_eq!(c.count(), 1400 - 2);
    assert!(c.get(&ExternalId::Num(1005)).unwrap().is_none());
    c.merge_now(&merge::NoProgress).unwrap();
    assert_eq!(c.count(), 1400 - 2);
    assert!(c.get(&ExternalId::Num(1005)).unwrap().is_none());
    assert_eq!(c.get(&ExternalId::Num(1350)).unwrap().unwrap().vector, vs[1350]);
    crate::index::verify::verify_index(&p).unwrap();
}

/// An index made by `basalt build` opens as a collection (id = row) and an
/// import keeps the ids and payloads it was given, in row order and packed
/// (nodes numbered apart from rows: the ids file maps them back), through
/// a merge too.
#[test]
fn built_index_and_import_open_as_collections() {
    use crate::format::graph::Placement;
    for placement in [Placement::RowOrder, Placement::Packed] {
        built_and_imported(placement);
    }
}

/// Build options for the small indexes the tests here build or import.
fn small_build(placement: crate::format::graph::Placement) -> crate::index::build::BuildOptions {
    crate::index::build::BuildOptions {
        graph: crate::vamana::BuildParams { degree_max: 16, list_size: 32, ..Default::default() },
        pq_chunks: 4,
        placement,
        ..Default::default()
    }
}

fn built_and_imported(placement: crate::format::graph::Placement) {
    let dir = tempfile::tempdir().unwrap();
    let m = Mixture::new(DIM, 4, 1).unwrap();
    let base = dir.path().join("b.fbin");
    crate::synth::write_stream::<f32>(&m, &base, 500, 1, crate::synth::STREAM_BASE, &|_| {})
        .unwrap();
    let opts = small_build(placement);
    let idx = dir.path().join("idx");
    crate::index::build::build_index(&base, &idx, &opts, &()).unwrap();
    let file = crate::vecfile::VectorFile::open(&base).unwrap();
    let row_of = |r: u64| {
        let mut row = Vec::new();
        file.read_rows_f32(r, 1, &mut row).unwrap();
        row
    };
    let row = row_of(42);
    let sample: Vec<u64> = (0..500).step_by(23).filter(|&r| r != 42).collect();
    {
        let c = open(&idx);
        assert_eq!(c.state.read().generation.as_ref().unwrap().index.header().placement, placement);
        assert_eq!(c.count(), 500);
        assert_eq!(c.get(&ExternalId::Num(42)).unwrap().unwrap().vector, row);
        assert_eq!(c.search(&row, &params(1), false, None).unwrap()[0].id, ExternalId::Num(42));
        c.delete(&[ExternalId::Num(42)]).unwrap();
        c.merge_now(&merge::NoProgress).unwrap();
        assert!(c.get(&ExternalId::Num(42)).unwrap().is_none());
        assert_eq!(c.count(), 499);
        // Every other row is still its own id after the merge, and found.
        assert_eq!(c.state.read().generation.as_ref().unwrap().index.header().placement, placement);
        for &r in &sample {
            let v = row_of(r);
            assert_eq!(c.get(&ExternalId::Num(r)).unwrap().unwrap().vector, v, "row {r}");
            assert_eq!(c.search(&v, &params(1), false, None).unwrap()[0].id, ExternalId::Num(r));
        }
    }
    let ids: Vec<ExternalId> = (0..500)
        .map(|i| {
            if i % 2 == 0 {
                ExternalId::Num(1_000_000 + i)
            } else {
                ExternalId::from_string(&format!("s{i}")).unwrap()
            }
        })
        .collect();
    let pays: Vec<Option<serde_json::Value>> =
        (0..500).map(|i| (i % 3 == 0).then(|| serde_json::json!({"i": i}))).collect();
    let coll = dir.path().join("imp");
    import::import(&base, Some(ids.clone()), Some(pays), &coll, &opts).unwrap();
    let c = open(&coll);
    assert_eq!(c.count(), 500);
    let got = c.get(&ids[42]).unwrap().unwrap();
    assert_eq!(got.vector, row);
    assert_eq!(got.payload.as_deref(), Some("{\"i\":42}"));
    assert_eq!(c.search(&row, &params(1), true, None).unwrap()[0].id, ids[42]);
    assert!(c.get(&ExternalId::Num(42)).unwrap().is_none());
    for &r in &sample {
        let got = c.get(&ids[r as usize]).unwrap().unwrap();
        assert_eq!(got.vector, row_of(r), "row {r}");
        let want = (r % 3 == 0).then(|| format!("{{\"i\":{r}}}"));
        assert_eq!(got.payload, want, "row {r}");
    }
    // Duplicate ids are refused and leave nothing behind.
    let mut dup = ids.clone();
    dup[7] = dup[3].clone();
    let bad = dir.path().join("dup");
    assert!(matches!(
        import::import(&base, Some(dup), None, &bad, &opts),
        Err(CollectionError::Invalid(_))
    ));
    assert!(!bad.exists());
}

/// Past `delta_bytes_max` a write waits `write_wait_ms_max` for a merge and
/// then gets a clear "busy" error, writing nothing; a merge makes room.
#[test]
fn a_full_delta_answers_busy_until_a_merge() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    let mut cfg = config();
    cfg.delta_bytes_max = 1 << 20;
    cfg.write_wait_ms_max = 50;
    Collection::create(&p, &cfg).unwrap();
    let c = open(&p);
    let vs = data(8000, 4);
    let mut written = 0;
    let err = loop {
        match c.upsert(&points(&vs[written..written + 500], written as u64)) {
            Ok(_) => written += 500,
            Err(e) => break e,
        }
        assert!(written < 8000, "the delta never filled");
    };
    assert!(matches!(err, CollectionError::Busy(_)), "{err}");
    assert!(err.to_string().contains("delta_bytes_max"), "{err}");
    assert_eq!(c.count(), written as u64, "a refused batch wrote nothing");
    assert!(c.stats().delta_bytes <= 1 << 20);
    c.merge_now(&merge::NoProgress).unwrap();
    c.upsert(&points(&vs[written..written + 500], written as u64)).unwrap();
    assert_eq!(c.count(), written as u64 + 500);
}

/// A merge retrains PQ once the points outgrow the codebook's training set
/// by `retrain_growth_factor`, and not before; recall holds either way.
#[test]
fn merge_retrains_pq_past_the_growth_factor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    Collection::create(&p, &config()).unwrap();
    let c = open(&p);
    let vs = data(2400, 6);
    c.upsert(&points(&vs[..400], 0)).unwrap();
    assert!(c.merge_now(&merge::NoProgress).unwrap().retrained, "the first build trains");
    c.upsert(&points(&vs[400..1200], 400)).unwrap();
    let r = c.merge_now(&merge::NoProgress).unwrap();
    assert!(!r.retrained, "1,200 points < 4 x 400");
    c.upsert(&points(&vs[1200..2400], 1200)).unwrap();
    let r = c.merge_now(&merge::NoProgress).unwrap();
    assert!(r.retrained, "2,400 points > 4 x 400");
    let m = crate::index::read_manifest(&p).unwrap();
    assert_eq!(m.pq_trained_points, Some(2400));
    let live: Vec<(u64, Vec<f32>)> = (0..2400).map(|i| (i as u64, vs[i].clone())).collect();
    let rc = recall(&c, &live, &data(30, 77));
    assert!(rc > 0.9, "recall after a retrain {rc}");
    crate::index::verify::verify_index(&p).unwrap();
}

/// Inner product: points longer than the generation's M wait in the delta
/// (exact), and the merge that takes them writes a new space (larger M,
/// codebook retrained); the longest points are found after it.
#[test]
fn inner_product_points_past_m_get_a_new_space() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    let mut cfg = config();
    cfg.metric = Metric::InnerProduct;
    Collection::create(&p, &cfg).unwrap();
    let c = open(&p);
    let vs = data(1200, 8);
    c.upsert(&points(&vs[..1000], 0)).unwrap();
    c.merge_now(&merge::NoProgress).unwrap();
    let m0 = crate::index::read_manifest(&p).unwrap().ip_norm_max;
    let long: Vec<Vec<f32>> =
        vs[1000..1200].iter().map(|v| v.iter().map(|x| x * 3.0).collect()).collect();
    c.upsert(&points(&long, 1000)).unwrap();
    // The best match by inner product among every live point, by brute force.
    let all: Vec<(u64, Vec<f32>)> = (0..1000)
        .map(|i| (i as u64, vs[i].clone()))
        .chain((0..200).map(|i| (1000 + i as u64, long[i].clone())))
        .collect();
    let best = |q: &[f32]| {
        all.iter()
            .map(|(id, v)| (q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>(), *id))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap()
            .1
    };
    let agree = |c: &Collection| {
        (0..50)
            .filter(|&i| {
                let q = &vs[i * 7];
                c.search(q, &params(1), false, None).unwrap()[0].id == ExternalId::Num(best(q))
            })
            .count()
    };
    let before = agree(&c);
    assert!(before >= 45, "{before} of 50 best matches with the long points in the delta");
    let r = c.merge_now(&merge::NoProgress).unwrap();
    assert!(r.retrained);
    let m1 = crate::index::read_manifest(&p).unwrap().ip_norm_max;
    assert!(m1 > m0 * 2.0, "M {m0} -> {m1}");
    let after = agree(&c);
    assert!(after >= 45, "{after} of 50 best matches after the merge into a new space");
    crate::index::verify::verify_index(&p).unwrap();
}

/// Deleting every point is an ordinary state: the merge that follows
/// leaves a generation of free slots (or, before any generation, nothing),
/// searches answer empty, and the next points fill the freed slots.
#[test]
fn deleting_every_point_then_merging() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    Collection::create(&p, &config()).unwrap();
    let vs = data(600, 5);
    let queries = data(20, 98);
    let c = open(&p);
    // Before any generation: written and deleted in the delta.
    c.upsert(&points(&vs[..50], 0)).unwrap();
    let all: Vec<ExternalId> = (0..50).map(ExternalId::Num).collect();
    assert_eq!(c.delete(&all).unwrap().points, 50);
    c.merge_now(&merge::NoProgress).unwrap();
    assert_eq!(c.count(), 0);
    assert!(c.search(&vs[0], &params(5), false, None).unwrap().is_empty());
    // A generation whose every point is then deleted.
    c.upsert(&points(&vs[..300], 0)).unwrap();
    c.merge_now(&merge::NoProgress).unwrap();
    let gen0 = c.stats().generation.expect("a first generation");
    let all: Vec<ExternalId> = (0..300).map(ExternalId::Num).collect();
    assert_eq!(c.delete(&all).unwrap().points, 300);
    c.merge_now(&merge::NoProgress).unwrap();
    let st = c.stats();
    assert_eq!(st.generation, Some(gen0 + 1));
    assert_eq!(c.count(), 0);
    assert_eq!(st.disk_free_slots, st.disk_slots);
    for q in &queries {
        assert!(c.search(q, &params(10), false, None).unwrap().is_empty());
    }
    assert!(c.scroll(None, 10).unwrap().is_empty());
    crate::index::verify::verify_index(&p).unwrap();
    drop(c);
    let c = open(&p);
    assert_eq!(c.count(), 0);
    // New points take the freed slots and are found.
    c.upsert(&points(&vs[300..600], 1000)).unwrap();
    c.merge_now(&merge::NoProgress).unwrap();
    let st = c.stats();
    assert_eq!(c.count(), 300);
    assert_eq!(st.disk_slots, 300, "the new points reuse the freed slots");
    crate::index::verify::verify_index(&p).unwrap();
    let live: Vec<(u64, Vec<f32>)> = (300..600).map(|i| (i as u64 + 700, vs[i].clone())).collect();
    let rc = recall(&c, &live, &queries);
    assert!(rc > 0.85, "recall {rc} after refilling an emptied generation");
}

/// A merge logs a generation switch for the log's followers and removes
/// the WAL segments wholly below the new generation's LSN; what is left
/// replays on reopen, including writes made after the merge.
#[test]
fn merges_log_switches_and_trim_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    Collection::create(&p, &config()).unwrap();
    let opts = CollectionOptions {
        no_auto_merge: true,
        wal_segment_bytes_max: Some(16 << 10),
        ..CollectionOptions::default()
    };
    let vs = data(1200, 6);
    let c = Collection::open(&p, opts.clone()).unwrap();
    for i in 0..20 {
        c.upsert(&points(&vs[i * 50..(i + 1) * 50], (i * 50) as u64)).unwrap();
    }
    let before = c.wal().segments();
    assert!(before.len() >= 4, "segments {before:?}");
    c.merge_now(&merge::NoProgress).unwrap();
    let gen_lsn = c.stats().generation_lsn;
    let after = c.wal().segments();
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    // Only segments with a record above the generation's LSN are kept.
    assert!(after[0] <= gen_lsn + 1, "kept {after:?} for a generation at {gen_lsn}");
    for w in after.windows(2) {
        assert!(w[1] > gen_lsn, "segment {} is wholly below {gen_lsn}", w[0]);
    }
    // Writes after the merge, then a reopen replays them from what is left.
    c.upsert(&points(&vs[1000..1200], 5000)).unwrap();
    c.delete(&[ExternalId::Num(3), ExternalId::Num(5003)]).unwrap();
    c.merge_now(&merge::NoProgress).unwrap();
    c.upsert(&points(&vs[..10], 9000)).unwrap();
    let want = c.count();
    let generation = c.stats().generation.unwrap();
    drop(c);
    let mut switches = Vec::new();
    let (_, _) = crate::wal::Wal::open(
        Arc::new(crate::wal::RealFs),
        &p.join(WAL_DIR),
        crate::wal::WalOptions::default(),
        0,
        |r| {
            if r.kind == RecordKind::GenerationSwitch {
                switches.push(batch::decode_switch(&r.body).unwrap());
            }
            Ok(())
        },
    )
    .unwrap();
    let last = switches.last().expect("a generation switch in the log");
    assert_eq!(last.generation, generation);
    let m = crate::index::read_manifest(&p).unwrap();
    assert_eq!((last.build_id, last.lsn), (m.ident().build_id, m.lsn));
    let c = Collection::open(&p, opts).unwrap();
    assert_eq!(c.count(), want);
    assert_eq!(c.count(), 1200 - 2 + 10);
    assert!(c.get(&ExternalId::Num(3)).unwrap().is_none());
    assert!(c.get(&ExternalId::Num(9005)).unwrap().is_some());
}

/// A snapshot taken while a writer upserts opens as a collection holding
/// the disk generation, the delta, deletes and replaced payloads, and a
/// prefix of the concurrent writes that includes every one acknowledged
/// before it started; the source keeps working.
#[test]
fn snapshots_are_consistent_under_writes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    Collection::create(&p, &config()).unwrap();
    let c = open(&p);
    let vs = data(1600, 5);
    c.upsert(&points(&vs[..1000], 0)).unwrap();
    c.merge_now(&merge::NoProgress).unwrap();
    c.delete(&[ExternalId::Num(3), ExternalId::Num(4)]).unwrap();
    c.upsert(&points(&vs[1000..1200], 1000)).unwrap();
    let replaced = PointIn {
        id: ExternalId::Num(5),
        vector: vs[5].clone(),
        payload: Some(serde_json::json!({"replaced": true})),
    };
    c.upsert(&[replaced]).unwrap();
    let acked_before = c.wal().last_lsn();

    let snap = dir.path().join("snaps").join("s1");
    let writer = {
        let c = Arc::clone(&c);
        let vs = vs.clone();
        std::thread::spawn(move || {
            for b in (1200..1600).step_by(10) {
                c.upsert(&points(&vs[b..b + 10], b as u64)).unwrap();
            }
        })
    };
    let report = c.snapshot(&snap).unwrap();
    writer.join().unwrap();
    assert!(report.lsn_at_least >= acked_before);
    assert_eq!(report.generation, Some(0));
    assert!(c.snapshot(&snap).is_err(), "a snapshot overwrote an existing one");
    // The source goes on.
    c.upsert(&points(&vs[..1], 9999)).unwrap();

    crate::index::verify::verify_index(&snap).unwrap();
    let s = open(&snap);
    for i in 0..1200u64 {
        let got = s.get(&ExternalId::Num(i)).unwrap();
        if i == 3 || i == 4 {
            assert!(got.is_none(), "deleted point {i} is back");
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("point {i} missing from the snapshot"));
        let want =
            if i == 5 { r#"{"replaced":true}"#.to_string() } else { format!(r#"{{"n":{i}}}"#) };
        assert_eq!(got.payload.as_deref(), Some(want.as_str()), "payload of {i}");
        assert_eq!(got.vector, vs[i as usize], "vector of {i}");
    }
    // The concurrent writes: a prefix (one writer, batches in LSN order).
    let present: Vec<bool> =
        (1200..1600u64).map(|i| s.get(&ExternalId::Num(i)).unwrap().is_some()).collect();
    let k = present.iter().take_while(|&&b| b).count();
    assert!(present[k..].iter().all(|&b| !b), "the snapshot is not a prefix of the log");
    assert!(
        s.get(&ExternalId::Num(9999)).unwrap().is_none(),
        "a write after the snapshot is in it"
    );
    assert_eq!(s.count(), 1198 + k as u64);
    let hits = s.search(&vs[700], &params(1), false, None).unwrap();
    assert_eq!(hits[0].id, ExternalId::Num(700));
    // A merge of the snapshot works like one of the source.
    s.merge_now(&merge::NoProgress).unwrap();
    assert_eq!(s.count(), 1198 + k as u64);
}

/// In a packed generation a merge puts each new point in a free slot of a
/// sector that holds one of its neighbours (when one has room), so what the
/// packed build gave (neighbours read with one sector) survives churn.
/// Counted: new points that share a sector with at least one out-neighbour.
#[test]
fn merges_place_new_points_beside_their_neighbours() {
    use crate::format::graph::Placement;
    let dir = tempfile::tempdir().unwrap();
    let m = Mixture::new(DIM, 8, 5).unwrap();
    let base = dir.path().join("b.fbin");
    crate::synth::write_stream::<f32>(&m, &base, 3000, 1, crate::synth::STREAM_BASE, &|_| {})
        .unwrap();
    let opts = small_build(Placement::Packed);
    let coll = dir.path().join("c");
    import::import(&base, None, None, &coll, &opts).unwrap();
    let c = open(&coll);
    // 10% deleted (every tenth row), as many new points.
    let gone: Vec<ExternalId> = (0..3000).step_by(10).map(ExternalId::Num).collect();
    c.delete(&gone).unwrap();
    let fresh = m.block::<f32>(99, 0, 0, 300);
    let new: Vec<Vec<f32>> = fresh.chunks_exact(DIM).map(|r| r.to_vec()).collect();
    c.upsert(&points(&new, 10_000)).unwrap();
    c.merge_now(&merge::NoProgress).unwrap();
    let g = c.state.read().generation.clone().unwrap();
    assert_eq!(g.index.header().placement, Placement::Packed);
    let per = g.index.layout().records_per_sector;
    assert!(per >= 2, "{per} records a sector");
    assert_eq!(g.slots(), 3000, "the new points took the deleted points' slots");
    let (mut new_points, mut beside) = (0usize, 0usize);
    for slot in 0..g.slots() as u32 {
        if let Some(ExternalId::Num(id)) = g.external_id(slot).unwrap()
            && id >= 10_000
        {
            new_points += 1;
            let (_, nbrs) = g.read_record(slot).unwrap();
            beside += usize::from(nbrs.iter().any(|&n| n / per == slot / per));
        }
    }
    assert_eq!(new_points, 300);
    // Measured: 269 of 300 (12 when slots were taken in ascending order).
    assert!(beside >= 240, "{beside} of 300 new points share a sector with a neighbour");
}

/// Deletes `ids` when the merge reaches its write pass (after the slots
/// are chosen): writes that land while a merge runs, at a fixed moment.
struct DeleteAtWrite {
    c: Arc<Collection>,
    ids: Vec<ExternalId>,
}

impl merge::MergeProgress for DeleteAtWrite {
    fn phase(&self, name: &str, _total: u64) {
        if name == "write" {
            self.c.delete(&self.ids).unwrap();
        }
    }
}

/// In a packed generation a merge also moves orphans (kept nodes sharing no
/// edge with the rest of their sector) beside their neighbours: a moved
/// point keeps its id, vector and payload, is found by search, a delete of
/// it while the merge runs holds in the new generation (its tombstone
/// follows it to its new slot), and the result verifies and reopens.
#[test]
fn merges_move_orphans_and_keep_their_points() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    Collection::create(&p, &config()).unwrap();
    let vs = data(6000, 11);
    let c = open(&p);
    c.upsert(&points(&vs[..3000], 0)).unwrap();
    c.merge_now(&merge::NoProgress).unwrap();
    let placement = c.state.read().generation.as_ref().unwrap().index.header().placement;
    assert_eq!(placement, crate::format::graph::Placement::Packed);
    let mut live: Vec<u64> = (0..3000).collect();
    let mut next = 3000u64;
    let mut relocated = 0u64;
    let mut gone_during: Vec<ExternalId> = Vec::new();
    let mut moved_and_gone = 0usize;
    for cycle in 0..4u64 {
        // Every seventh live point (shifted a cycle) out, as many in.
        let out: Vec<u64> = live.iter().copied().filter(|i| (i + cycle) % 7 == 0).collect();
        let ids: Vec<ExternalId> = out.iter().map(|&i| ExternalId::Num(i)).collect();
        for chunk in ids.chunks(1000) {
            c.delete(chunk).unwrap();
        }
        live.retain(|i| (i + cycle) % 7 != 0);
        let n = out.len() as u64;
        c.upsert(&points(&vs[next as usize..(next + n) as usize], next)).unwrap();
        live.extend(next..next + n);
        next += n;
        let rep = if cycle == 3 {
            // The last merge also sees deletes of disk points mid-merge.
            gone_during = live.iter().step_by(9).map(|&i| ExternalId::Num(i)).collect();
            let before: Vec<Option<u32>> =
                gone_during.iter().map(|id| c.idmap().get(id).unwrap()).collect();
            let hook = DeleteAtWrite { c: Arc::clone(&c), ids: gone_during.clone() };
            let rep = c.merge_now(&hook).unwrap();
            // Where each of them sits now (the ids file keeps a deleted
            // point's id until the next merge frees its slot).
            let g = c.state.read().generation.clone().unwrap();
            let mut now: FxHashMap<ExternalId, u32> = FxHashMap::default();
            for slot in 0..g.slots() as u32 {
                if let Some(id) = g.external_id(slot).unwrap() {
                    now.insert(id, slot);
                }
            }
            moved_and_gone = gone_during
                .iter()
                .zip(&before)
                .filter(|(id, b)| b.is_some() && now.get(*id).copied() != **b)
                .count();
            let gone: FxHashSet<u64> = gone_during
                .iter()
                .map(|id| match id {
                    ExternalId::Num(n) => *n,
                    _ => unreachable!(),
                })
                .collect();
            live.retain(|i| !gone.contains(i));
            rep
        } else {
            c.merge_now(&merge::NoProgress).unwrap()
        };
        relocated += rep.relocated;
    }
    assert!(relocated > 0, "no orphan moved in four merges");
    assert!(moved_and_gone > 0, "no point deleted mid-merge had moved: the test misses its case");
    let check = |c: &Arc<Collection>| {
        assert_eq!(c.count(), live.len() as u64);
        for &i in &live {
            let got = c.get(&ExternalId::Num(i)).unwrap();
            let got = got.unwrap_or_else(|| panic!("point {i} lost"));
            assert_eq!(got.vector, vs[i as usize], "vector of {i}");
            let want = format!(r#"{{"n":{i}}}"#);
            assert_eq!(got.payload.as_deref(), Some(want.as_str()), "payload of {i}");
        }
        for id in &gone_during {
            assert!(c.get(id).unwrap().is_none(), "{id:?} deleted mid-merge came back");
            let ExternalId::Num(i) = id else { unreachable!() };
            let hits = c.search(&vs[*i as usize], &params(1), false, None).unwrap();
            assert_ne!(hits.first().map(|h| &h.id), Some(id), "{id:?} deleted but found");
        }
        let with: Vec<(u64, Vec<f32>)> =
            live.iter().map(|&i| (i, vs[i as usize].clone())).collect();
        let r = recall(c, &with, &vs[5900..5950]);
        assert!(r >= 0.9, "recall@10 {r} after merges that moved orphans");
    };
    check(&c);
    crate::index::verify::verify_index(&p).unwrap();
    drop(c);
    let c = open(&p);
    check(&c);
    c.merge_now(&merge::NoProgress).unwrap();
    check(&c);
    crate::index::verify::verify_index(&p).unwrap();
}

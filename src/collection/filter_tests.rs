//! Filtered search in-process: every plan returns min(k, matches) points
//! that all pass, the exact modes equal brute force id for id, payload
//! indexes follow merges, deletes, replacements and a reopen, and counts
//! and scrolls agree with brute force, with and without indexes.

use std::sync::Arc;

use serde_json::{Value, json};

use super::filter::Filter;
use super::filtered::FilterMode;
use super::pindex::Schema;
use super::*;
use crate::synth::Mixture;

const DIM: usize = 16;
const N: usize = 3_000;

fn config() -> CollectionConfig {
    let mut c = CollectionConfig::new(DIM as u32, Metric::L2, ElementType::F32);
    c.degree_max = 16;
    c.list_size = 40;
    c.pq_chunks = 8;
    c
}

fn open(dir: &std::path::Path) -> Arc<Collection> {
    let opts = CollectionOptions { no_auto_merge: true, ..CollectionOptions::default() };
    Collection::open(dir, opts).unwrap()
}

/// Point i's payload: a keyword with a skewed distribution, an integer,
/// a float, a bool, a date, an array of tags, a nested object; some keys
/// missing or null.
fn payload(i: u64) -> Value {
    let kw = match i % 100 {
        0..=49 => "common",
        50..=89 => "mid",
        90..=98 => "rare",
        _ => "unique",
    };
    let mut p = json!({
        "kw": kw,
        "n": i,
        "price": (i % 1000) as f64 / 10.0,
        "flag": i.is_multiple_of(3),
        "day": format!("2024-01-{:02}T00:00:00Z", 1 + i % 28),
        "tags": [format!("t{}", i % 7), format!("t{}", i % 11)],
        "shop": {"city": if i.is_multiple_of(2) { "x" } else { "y" }, "rank": i % 5},
    });
    if i.is_multiple_of(13) {
        p["maybe"] = Value::Null;
    } else if i % 13 == 1 {
        p["maybe"] = json!([]);
    } else if i % 13 == 2 {
        p["maybe"] = json!([1, 2, 3]);
    }
    p
}

fn vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let m = Mixture::new(DIM, 8, 3).unwrap();
    m.block::<f32>(seed, 0, 0, n).chunks_exact(DIM).map(|c| c.to_vec()).collect()
}

struct World {
    c: Arc<Collection>,
    /// id -> (vector, payload) of live points.
    live: Vec<Option<(Vec<f32>, Value)>>,
}

impl World {
    fn make(dir: &std::path::Path, with_indexes: bool) -> World {
        Collection::create(dir, &config()).unwrap();
        let c = open(dir);
        let vs = vectors(N, 11);
        if with_indexes {
            // One index made before the points arrive, the rest after.
            c.create_payload_index("kw", Schema::Keyword).unwrap();
        }
        let mut live = vec![None; N];
        for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
            let pts: Vec<PointIn> = chunk
                .iter()
                .map(|&i| PointIn {
                    id: ExternalId::Num(i as u64),
                    vector: vs[i].clone(),
                    payload: Some(payload(i as u64)),
                })
                .collect();
            c.upsert(&pts).unwrap();
            for &i in chunk {
                live[i] = Some((vs[i].clone(), payload(i as u64)));
            }
        }
        c.merge_now(&merge::NoProgress).unwrap();
        if with_indexes {
            for (f, s) in [
                ("n", Schema::Integer),
                ("price", Schema::Float),
                ("flag", Schema::Bool),
                ("day", Schema::Datetime),
                ("tags", Schema::Keyword),
                ("shop.city", Schema::Keyword),
            ] {
                c.create_payload_index(f, s).unwrap();
            }
        }
        // Churn: deletes (tombstones), replacements with new payloads, and
        // new points left in the delta.
        let dels: Vec<ExternalId> = (0..N as u64).step_by(17).map(ExternalId::Num).collect();
        c.delete(&dels).unwrap();
        for id in &dels {
            if let ExternalId::Num(n) = id {
                live[*n as usize] = None;
            }
        }
        let re: Vec<PointIn> = (5..N as u64)
            .step_by(29)
            .map(|i| PointIn {
                id: ExternalId::Num(i),
                vector: vs[(i as usize * 7) % N].clone(),
                payload: Some(payload(i + 1)),
            })
            .collect();
        c.upsert(&re).unwrap();
        for p in &re {
            if let ExternalId::Num(n) = p.id {
                live[n as usize] = Some((p.vector.clone(), p.payload.clone().unwrap()));
            }
        }
        World { c, live }
    }

    /// Brute force: the k nearest live ids passing `f`, and how many pass.
    fn truth(&self, q: &[f32], k: usize, f: &Filter) -> (Vec<u64>, usize) {
        let l2 = crate::distance::Distance::<f32>::new(Metric::L2);
        let mut all: Vec<(f32, u64)> = self
            .live
            .iter()
            .enumerate()
            .filter_map(|(i, x)| x.as_ref().map(|(v, p)| (i as u64, v, p)))
            .filter(|(i, _, p)| f.matches(&ExternalId::Num(*i), p))
            .map(|(i, v, _)| (l2.eval(q, v), i))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let n = all.len();
        (all.into_iter().take(k).map(|x| x.1).collect(), n)
    }
}

fn filters() -> Vec<(&'static str, Value)> {
    vec![
        ("none match", json!({"must": [{"key": "kw", "match": {"value": "absent"}}]})),
        ("all", json!({"must": [{"key": "n", "range": {"gte": 0}}]})),
        ("all by complement", json!({"must_not": [{"key": "kw", "match": {"value": "absent"}}]})),
        ("empty", json!({})),
        ("one point", json!({"must": [{"key": "n", "match": {"value": 1234}}]})),
        ("exactly k", json!({"must": [{"has_id": [3, 4, 6, 7, 8, 9, 10, 11, 12, 13]}]})),
        ("1% keyword", json!({"must": [{"key": "kw", "match": {"value": "unique"}}]})),
        ("50% keyword", json!({"must": [{"key": "kw", "match": {"value": "common"}}]})),
        ("float range", json!({"must": [{"key": "price", "range": {"gte": 10.0, "lt": 12.5}}]})),
        (
            "date range",
            json!({"must": [{"key": "day", "range": {"gt": "2024-01-03T00:00:00Z", "lte": "2024-01-05"}}]}),
        ),
        ("array any", json!({"must": [{"key": "tags", "match": {"any": ["t3", "t10"]}}]})),
        (
            "nested key",
            json!({"must": [{"key": "shop.city", "match": {"value": "x"}}, {"key": "shop.rank", "match": {"value": 2}}]}),
        ),
        (
            "must_not + should",
            json!({"must_not": [{"key": "flag", "match": {"value": true}}], "should": [{"key": "kw", "match": {"value": "rare"}}, {"key": "tags", "match": {"value": "t0"}}]}),
        ),
        ("except", json!({"must": [{"key": "kw", "match": {"except": ["common", "mid"]}}]})),
        (
            "is_empty",
            json!({"must": [{"is_empty": {"key": "maybe"}}, {"key": "kw", "match": {"value": "rare"}}]}),
        ),
        ("is_null", json!({"must": [{"is_null": {"key": "maybe"}}]})),
        ("values_count", json!({"must": [{"key": "maybe", "values_count": {"gte": 2}}]})),
    ]
}

fn check_world(w: &World, label: &str) {
    let qs = vectors(12, 99);
    let k = 10;
    for (name, fv) in filters() {
        let f = Filter::parse(&fv, "filter").unwrap();
        for q in &qs {
            let (want, matches) = w.truth(q, k, &f);
            for mode in
                [FilterMode::Auto, FilterMode::Prefilter, FilterMode::Graph, FilterMode::Exact]
            {
                let p = SearchParams { k, list_size: 40, beam_width: 4 };
                let (hits, _, fs) = w.c.search_filtered(q, &p, false, Some(&f), mode).unwrap();
                let got: Vec<u64> = hits
                    .iter()
                    .map(|h| match h.id {
                        ExternalId::Num(n) => n,
                        _ => unreachable!(),
                    })
                    .collect();
                assert_eq!(
                    got.len(),
                    k.min(matches),
                    "{label} {name} {mode:?}: {} results for {matches} matches ({fs:?})",
                    got.len()
                );
                for id in &got {
                    let (_, p) = w.live[*id as usize].as_ref().expect("a live point");
                    assert!(
                        f.matches(&ExternalId::Num(*id), p),
                        "{label} {name} {mode:?}: {id} fails"
                    );
                }
                if mode == FilterMode::Exact {
                    assert_eq!(got, want, "{label} {name}: exact mode equals brute force");
                } else {
                    let hit = got.iter().filter(|g| want.contains(g)).count();
                    assert!(
                        hit * 10 >= want.len() * 7,
                        "{label} {name} {mode:?}: {hit} of {} ({fs:?})",
                        want.len()
                    );
                }
            }
        }
        let matches = w
            .live
            .iter()
            .enumerate()
            .filter(|(i, x)| {
                x.as_ref().is_some_and(|(_, p)| f.matches(&ExternalId::Num(*i as u64), p))
            })
            .count();
        assert_eq!(w.c.count_filtered(&f).unwrap(), matches as u64, "{label} {name}: count");
        let mut seen = 0usize;
        let mut after = None;
        loop {
            let page = w.c.scroll_filtered(after.as_ref(), 97, &f).unwrap();
            seen += page.len();
            match page.last() {
                Some(l) if page.len() == 97 => after = Some(l.clone()),
                _ => break,
            }
        }
        assert_eq!(seen, matches, "{label} {name}: scroll");
    }
}

#[test]
fn filtered_search_without_indexes_returns_min_k_matches() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::make(dir.path(), false);
    check_world(&w, "no index");
}

#[test]
fn filtered_search_with_indexes_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::make(dir.path(), true);
    // The planner answers the indexed conditions from the indexes.
    let f = Filter::parse(&json!({"must": [{"key": "kw", "match": {"value": "unique"}}]}), "f")
        .unwrap();
    let p = SearchParams { k: 10, list_size: 40, beam_width: 4 };
    let (_, _, fs) =
        w.c.search_filtered(&vectors(1, 5)[0], &p, false, Some(&f), FilterMode::Auto).unwrap();
    assert_eq!(fs.estimate_source, "index", "{fs:?}");
    assert!(fs.unindexed.is_empty());
    assert_eq!(fs.plan, "exact");
    check_world(&w, "indexes");
    // A merge moves the delta and the tombstones into the indexes.
    w.c.merge_now(&merge::NoProgress).unwrap();
    check_world(&w, "indexes after merge");
    // Reopen: indexes and their definitions are durable; the log replays.
    let World { c, live } = w;
    drop(c);
    let c = open(dir.path());
    assert_eq!(c.payload_indexes(usize::MAX).unwrap().len(), 7);
    let w = World { c, live };
    check_world(&w, "indexes after reopen");
    // Dropping an index: the same answers, from payloads.
    w.c.drop_payload_index("kw").unwrap();
    let (_, _, fs) =
        w.c.search_filtered(&vectors(1, 5)[0], &p, false, Some(&f), FilterMode::Auto).unwrap();
    assert_eq!(fs.unindexed, vec!["kw".to_string()]);
    check_world(&w, "an index dropped");
}

#[test]
fn delete_by_filter_deletes_exactly_the_matches() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::make(dir.path(), true);
    let f =
        Filter::parse(&json!({"must": [{"key": "kw", "match": {"value": "rare"}}]}), "f").unwrap();
    let before = w.c.count();
    let matches = w.c.count_filtered(&f).unwrap();
    assert!(matches > 0);
    let ack = w.c.delete_by_filter(&f).unwrap().expect("something deleted");
    assert_eq!(ack.points as u64, matches);
    assert_eq!(w.c.count_filtered(&f).unwrap(), 0);
    assert_eq!(w.c.count(), before - matches);
}

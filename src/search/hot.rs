//! Which nodes queries touch most: the ranking behind the entry cache.
//!
//! At build time, with the graph and the PQ codes still in memory, a seeded
//! sample of the indexed vectors is searched as queries (queries come from the
//! data's distribution), with the disk search's own PQ-steered beam
//! ([`super::beam::Beam`]) over the in-memory adjacency, and every expansion
//! of a node is counted. Nodes sorted by count (ties by id) are the hot list
//! the build writes next to the graph (`gen-N/hot`); at open the entry cache
//! takes nodes from its head until its byte budget is spent. This is the
//! warm-up DiskANN performs at load from its build's sample file
//! (`generate_cache_list_from_sample_queries`), done once at build time so
//! opening stays free of I/O-heavy work. A BFS cache around the medoid only
//! serves the first rounds; the hot list also holds the hubs later rounds
//! pass through.
//!
//! Limits: at most [`HOT_SAMPLE_MAX`] sample queries (every point of a
//! smaller index), at most [`HOT_NODES_MAX`] nodes kept.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::beam::Beam;
use crate::index::pqspace::{PqSpace, TABLE_METRIC};
use crate::pq::Codebook;

/// Most sample queries the warm-up runs. DiskANN samples min(10% of N,
/// 100,000); more samples rank the cache's tail better: with 10K cached
/// nodes, reads at L = 60 went from 44.6 to 43.3 on debian-384 (10K -> 100K
/// samples) and from 53.3 to 52.9 on docs-384 (25K -> 100K), for a warm-up
/// of about 10 s per 100K samples on 2 cores.
pub const HOT_SAMPLE_MAX: usize = 100_000;
/// Search list size of the warm-up searches. DiskANN warms up at 15; at 64
/// the list also holds the nodes the later rounds of searches at the usual
/// L (40-160) pass through. Measured with 10K cached nodes, reads per query
/// at search L = 80 against a warm-up at 15: debian-384 62.0 -> 59.5 (at
/// 40) -> 58.3 (at 80); docs-384 72.1 -> 70.5 -> 70.0; 200K x 128
/// synthetic 73.5 -> 72.7 (at 64). The warm-up's cost grows with it (about
/// 1 s -> 4 s at 250K points).
pub const HOT_SAMPLE_LIST_SIZE: usize = 64;
/// Beam width of the warm-up searches.
pub const HOT_SAMPLE_BEAM_WIDTH: usize = 4;
/// Most nodes a hot list holds (the entry cache's own limit).
pub const HOT_NODES_MAX: usize = super::CACHE_NODES_MAX;

/// How many sample queries an index of `n` points warms up with.
pub fn sample_size(n: u64) -> usize {
    (n.min(HOT_SAMPLE_MAX as u64)) as usize
}

/// The ids of the sample queries: `sample_size(n)` distinct rows, seeded.
pub fn sample_ids(n: u64, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x686f_745f_6c69_7374);
    let mut ids: Vec<u32> = rand::seq::index::sample(&mut rng, n as usize, sample_size(n))
        .into_iter()
        .map(|i| i as u32)
        .collect();
    ids.sort_unstable();
    ids
}

/// What the warm-up needs of an index under construction.
pub struct WarmUp<'a> {
    pub codebook: &'a Codebook,
    /// Every node's PQ code, node i at `i * chunks`.
    pub codes: &'a [u8],
    pub chunks: usize,
    pub space: PqSpace,
    pub medoid: u32,
    pub n: u64,
}

/// Ranks nodes by how often beam searches for `queries` (each `dim` wide,
/// prepared: normalised for cosine) expand them, most first, ties by id;
/// nodes never expanded are left out. `neighbors(id, out)` appends a node's
/// out-neighbours to `out`. Runs on the current rayon pool.
pub fn rank<F>(w: &WarmUp<'_>, queries: &[f32], dim: usize, neighbors: F) -> Vec<u32>
where
    F: Fn(u32, &mut Vec<u32>) + Sync,
{
    rank_with(w, queries, dim, HOT_SAMPLE_LIST_SIZE, HOT_SAMPLE_BEAM_WIDTH, neighbors)
}

/// [`rank`] with the warm-up searches' list size and beam width given.
pub fn rank_with<F>(
    w: &WarmUp<'_>,
    queries: &[f32],
    dim: usize,
    list_size: usize,
    beam_width: usize,
    neighbors: F,
) -> Vec<u32>
where
    F: Fn(u32, &mut Vec<u32>) + Sync,
{
    let fill = |start: usize, count: usize, out: &mut Vec<f32>| -> Result<(), ()> {
        out.clear();
        out.extend_from_slice(&queries[start * dim..(start + count) * dim]);
        Ok(())
    };
    let count = queries.len() / dim;
    match rank_blocks(w, count, dim, fill, list_size, beam_width, neighbors) {
        Ok(ranked) => ranked,
        Err(()) => unreachable!("a slice of queries always fills"),
    }
}

/// [`rank_with`] over `count` queries that `fill(start, n, out)` provides
/// a block at a time (so that the warm-up holds one block of queries, not
/// all of them), stopping at the first error of `fill`.
pub fn rank_blocks<F, Q, E>(
    w: &WarmUp<'_>,
    count: usize,
    dim: usize,
    mut fill: Q,
    list_size: usize,
    beam_width: usize,
    neighbors: F,
) -> Result<Vec<u32>, E>
where
    F: Fn(u32, &mut Vec<u32>) + Sync,
    Q: FnMut(usize, usize, &mut Vec<f32>) -> Result<(), E>,
{
    let row = |id: u32| &w.codes[id as usize * w.chunks..(id as usize + 1) * w.chunks];
    // Blocks of queries, each split into one run per thread: rayon's fold
    // would otherwise keep a count map per split until the reduce (tens of
    // maps of up to every expanded node: 30 MB on 100K x 64).
    let mut counts = FxHashMap::<u32, u32>::default();
    let threads = rayon::current_num_threads();
    let mut block = Vec::new();
    let mut start = 0;
    while start < count {
        let m = (count - start).min(HOT_BLOCK_QUERIES);
        fill(start, m, &mut block)?;
        let per_thread = m.div_ceil(threads).max(1);
        let part = count_block(w, &block, dim, per_thread, list_size, beam_width, &row, &neighbors);
        for (id, c) in part {
            *counts.entry(id).or_insert(0) += c;
        }
        start += m;
    }
    let mut ranked: Vec<(u32, u32)> = counts.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(HOT_NODES_MAX);
    Ok(ranked.into_iter().map(|(id, _)| id).collect())
}

/// Queries a warm-up block holds.
const HOT_BLOCK_QUERIES: usize = 8192;

/// Expansion counts of one block of warm-up queries.
#[allow(clippy::too_many_arguments, reason = "the warm-up's state, passed through")]
fn count_block<'a, F, R>(
    w: &WarmUp<'_>,
    queries: &[f32],
    dim: usize,
    per_thread: usize,
    list_size: usize,
    beam_width: usize,
    row: &R,
    neighbors: &F,
) -> FxHashMap<u32, u32>
where
    F: Fn(u32, &mut Vec<u32>) + Sync,
    R: Fn(u32) -> &'a [u8] + Sync,
{
    queries
        .par_chunks(dim)
        .with_min_len(per_thread)
        .fold(
            || {
                let table = w.codebook.lookup_table(&vec![0.0; w.codebook.dim()], TABLE_METRIC);
                (FxHashMap::<u32, u32>::default(), Beam::default(), table, Vec::new(), Vec::new())
            },
            |(mut counts, mut beam, mut table, mut pq_query, mut batch), q| {
                let mut nbrs = Vec::new();
                w.space.query(q, &mut pq_query);
                w.codebook.fill_lookup_table(&pq_query, TABLE_METRIC, &mut table);
                let d0 = table.distance(row(w.medoid));
                beam.start(list_size, beam_width, w.medoid, d0);
                loop {
                    beam.next_batch(&mut batch);
                    if batch.is_empty() {
                        break;
                    }
                    for &id in &batch {
                        *counts.entry(id).or_insert(0) += 1;
                        nbrs.clear();
                        neighbors(id, &mut nbrs);
                        for &n in &nbrs {
                            beam.offer(n, || table.distance(row(n)));
                        }
                    }
                }
                (counts, beam, table, pq_query, batch)
            },
        )
        .map(|(counts, ..)| counts)
        .reduce(FxHashMap::default, |mut a, b| {
            for (id, c) in b {
                *a.entry(id).or_insert(0) += c;
            }
            a
        })
}

//! k-means clustering of row-major f32 points: the trainer behind every PQ
//! chunk codebook.
//!
//! Called by [`crate::pq::Codebook::train`] once per chunk, on the chunk's
//! columns of the (centred) training sample. Seeding is k-means++ on a random
//! subsample of at most [`KMEANS_PP_SAMPLE_MAX`] points; then Lloyd
//! iterations, at most `iters_max`, stopping early once no assignment
//! changes. A cluster left empty is re-seeded with the point farthest from
//! its centre, so all k centres stay in use when the data allows.
//!
//! Invariants: the result depends only on the points, k, `iters_max` and the
//! RNG state handed in, never on the thread count (parallel steps write
//! disjoint outputs; every floating-point sum runs in a fixed order). With
//! fewer distinct points than k some centres are duplicates, which is
//! harmless. Bad arguments (zero width, no points, k out of range) are caller
//! bugs and panic.

use std::borrow::Cow;

use rand::Rng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Largest number of points k-means++ seeding looks at. Seeding costs
/// O(points * k * width) and only needs to spread the initial centres, so a
/// subsample of this size seeds as well as the full sample at a fraction of
/// the cost.
pub const KMEANS_PP_SAMPLE_MAX: usize = 16_384;

/// Largest number of clusters accepted.
pub const KMEANS_K_MAX: usize = 65_536;

/// Points per rayon task in the assignment step: big enough to amortise the
/// task, small enough to balance over threads.
const ASSIGN_BLOCK_ROWS: usize = 512;

/// The outcome of [`kmeans`].
#[derive(Clone, Debug)]
pub struct Clustering {
    /// k centres of `width` values each, concatenated.
    pub centers: Vec<f32>,
    /// Lloyd iterations run (assignment steps), at most `iters_max`.
    pub iterations: usize,
}

/// Clusters `points` (row-major, `width` values per point) into `k` centres.
///
/// Panics when `width` is 0, `points` is empty or not whole rows, or `k` is
/// outside `1..=KMEANS_K_MAX`.
pub fn kmeans(
    points: &[f32],
    width: usize,
    k: usize,
    iters_max: usize,
    rng: &mut ChaCha8Rng,
) -> Clustering {
    assert!(width > 0, "k-means width must be positive");
    assert!(
        !points.is_empty() && points.len().is_multiple_of(width),
        "k-means needs at least one whole row"
    );
    assert!((1..=KMEANS_K_MAX).contains(&k), "k {k} outside 1..={KMEANS_K_MAX}");
    debug_assert!(points.iter().all(|v| v.is_finite()), "k-means points must be finite");

    let n = points.len() / width;
    let mut centers = seed_plus_plus(points, width, k, rng);
    // u32::MAX is no cluster, so the first assignment step always counts as a change.
    let mut assignment = vec![u32::MAX; n];
    let mut distance = vec![0f32; n];
    let mut iterations = 0;
    for _ in 0..iters_max {
        let table = CenterTable::new(&centers, width);
        let changed = assign(points, &table, &mut assignment, &mut distance);
        iterations += 1;
        if changed == 0 {
            break;
        }
        update(points, width, k, &assignment, &mut distance, &mut centers);
    }
    Clustering { centers, iterations }
}

/// k-means++ seeding: each new centre is drawn with probability proportional
/// to its squared distance from the nearest centre chosen so far.
fn seed_plus_plus(points: &[f32], width: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = points.len() / width;
    let sample: Cow<[f32]> = if n > KMEANS_PP_SAMPLE_MAX {
        let mut picked = index::sample(rng, n, KMEANS_PP_SAMPLE_MAX).into_vec();
        // Sorted, so the gather reads memory in order and the subsample's row
        // order (which the weighted draw below depends on) is canonical.
        picked.sort_unstable();
        let mut rows = Vec::with_capacity(picked.len() * width);
        for i in picked {
            rows.extend_from_slice(&points[i * width..(i + 1) * width]);
        }
        Cow::Owned(rows)
    } else {
        Cow::Borrowed(points)
    };
    let m = sample.len() / width;

    let mut centers = Vec::with_capacity(k * width);
    let mut nearest = vec![f32::INFINITY; m];
    let mut pick = rng.random_range(0..m);
    for c in 0..k {
        centers.extend_from_slice(&sample[pick * width..(pick + 1) * width]);
        if c + 1 == k {
            break;
        }
        let center = &centers[c * width..];
        sample.par_chunks(width).zip(nearest.par_iter_mut()).for_each(|(x, d)| {
            *d = d.min(l2_squared(x, center));
        });
        // A sequential f64 sum: fixed order, so the draw is the same on any
        // thread count.
        let total: f64 = nearest.iter().map(|&d| f64::from(d)).sum();
        pick = if total > 0.0 && total.is_finite() {
            weighted_pick(&nearest, rng.random::<f64>() * total)
        } else {
            // Every point coincides with a chosen centre: the data has fewer
            // than k distinct points, and a duplicate centre is harmless.
            rng.random_range(0..m)
        };
    }
    centers
}

/// The first index where the running sum of `weights` passes `target`,
/// falling back to the last positive weight when rounding leaves `target`
/// just above the total.
fn weighted_pick(weights: &[f32], mut target: f64) -> usize {
    let mut last_positive = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            target -= f64::from(w);
            last_positive = i;
            if target < 0.0 {
                return i;
            }
        }
    }
    last_positive
}

/// Assigns every point to its nearest centre, recording the squared distance;
/// returns how many assignments changed.
fn assign(
    points: &[f32],
    table: &CenterTable,
    assignment: &mut [u32],
    distance: &mut [f32],
) -> usize {
    let width = table.width();
    points
        .par_chunks(ASSIGN_BLOCK_ROWS * width)
        .zip(assignment.par_chunks_mut(ASSIGN_BLOCK_ROWS))
        .zip(distance.par_chunks_mut(ASSIGN_BLOCK_ROWS))
        .map(|((rows, assigned), dists)| {
            let mut changed = 0;
            for ((x, a), d) in rows.chunks_exact(width).zip(assigned).zip(dists) {
                let (best, dist) = table.nearest(x);
                if *a != best {
                    *a = best;
                    changed += 1;
                }
                *d = dist;
            }
            changed
        })
        .sum()
}

/// Moves each centre to the mean of its points; re-seeds empty clusters with
/// the points farthest from their centres (consuming `distance`).
fn update(
    points: &[f32],
    width: usize,
    k: usize,
    assignment: &[u32],
    distance: &mut [f32],
    centers: &mut [f32],
) {
    // This step is O(n * width) against the assignment's O(n * k * width), so
    // it runs sequentially, in f64, which also keeps the sums deterministic.
    let mut sums = vec![0f64; k * width];
    let mut counts = vec![0u64; k];
    for (x, &a) in points.chunks_exact(width).zip(assignment) {
        let a = a as usize;
        counts[a] += 1;
        for (s, &v) in sums[a * width..(a + 1) * width].iter_mut().zip(x) {
            *s += f64::from(v);
        }
    }
    let mut empty = Vec::new();
    for (c, &count) in counts.iter().enumerate() {
        if count == 0 {
            empty.push(c);
            continue;
        }
        let inv = 1.0 / count as f64;
        for (dst, &s) in centers[c * width..(c + 1) * width].iter_mut().zip(&sums[c * width..]) {
            *dst = (s * inv) as f32;
        }
    }
    if empty.is_empty() {
        return;
    }
    for (c, p) in empty.iter().zip(farthest(distance, empty.len())) {
        centers[c * width..(c + 1) * width].copy_from_slice(&points[p * width..(p + 1) * width]);
        // Taken: the next empty cluster gets a different point.
        distance[p] = 0.0;
    }
}

/// Indices of the `count` largest distances, largest first, ties to the lower
/// index. The order is total, so the result is unique whatever the selection
/// algorithm does internally.
fn farthest(distance: &[f32], count: usize) -> Vec<usize> {
    let by_far = |a: &usize, b: &usize| distance[*b].total_cmp(&distance[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..distance.len()).collect();
    let count = count.min(order.len());
    if count < order.len() {
        order.select_nth_unstable_by(count, by_far);
        order.truncate(count);
    }
    order.sort_unstable_by(by_far);
    // With fewer points than empty clusters, the remaining clusters reuse the
    // farthest points again: duplicates are harmless.
    let mut picked = order.clone();
    while !order.is_empty() && picked.len() < count {
        picked.extend_from_slice(&order);
    }
    picked
}

/// Squared Euclidean distance of two equal-length rows.
#[inline]
fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Centres per block of a [`CenterTable`]: the accumulators of one block
/// stay in vector registers while the search walks the point's dimensions
/// (16 f32 are four SSE or two AVX registers).
pub const CENTER_BLOCK: usize = 16;

/// k centres laid out for the nearest-centre search. Centres are grouped in
/// blocks of [`CENTER_BLOCK`]; within a block, dimension j of all its
/// centres is one contiguous array, pre-scaled by -2, so the search computes
/// `||c||^2 - 2 x.c` for a whole block with one multiply-add per dimension
/// on registers, whatever the width, and keeps a running minimum per lane.
#[derive(Clone, Debug, PartialEq)]
pub struct CenterTable {
    width: usize,
    k: usize,
    /// `blocks[b * width + j][l]` is -2 times dimension j of centre
    /// `b * CENTER_BLOCK + l` (0 for the padding past k). Scaling by -2 is
    /// exact, so [`CenterTable::block`] recovers the centres bit for bit.
    blocks: Vec<[f32; CENTER_BLOCK]>,
    /// Squared norms by block; +inf for padding, which so never wins.
    norms: Vec<[f32; CENTER_BLOCK]>,
}

impl CenterTable {
    /// Lays out `centers` (k rows of `width` values, concatenated).
    pub fn new(centers: &[f32], width: usize) -> CenterTable {
        assert!(width > 0 && centers.len().is_multiple_of(width), "centres must be whole rows");
        let k = centers.len() / width;
        let block_count = k.div_ceil(CENTER_BLOCK);
        let mut blocks = vec![[0f32; CENTER_BLOCK]; block_count * width];
        let mut norms = vec![[f32::INFINITY; CENTER_BLOCK]; block_count];
        for (c, row) in centers.chunks_exact(width).enumerate() {
            let (b, l) = (c / CENTER_BLOCK, c % CENTER_BLOCK);
            for (j, &v) in row.iter().enumerate() {
                blocks[b * width + j][l] = -2.0 * v;
            }
            norms[b][l] = row.iter().map(|v| v * v).sum();
        }
        CenterTable { width, k, blocks, norms }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of blocks of [`CENTER_BLOCK`] centres (the last may be padded).
    pub fn block_count(&self) -> usize {
        self.norms.len()
    }

    /// Dimension `j` of the centres of block `b`, times -2.
    #[inline]
    pub fn block(&self, b: usize, j: usize) -> &[f32; CENTER_BLOCK] {
        &self.blocks[b * self.width + j]
    }

    /// The nearest centre to `x` (length `width`) and its squared distance;
    /// ties go to the lower centre index.
    #[inline]
    pub fn nearest(&self, x: &[f32]) -> (u32, f32) {
        assert_eq!(x.len(), self.width, "point width differs from the centres'");
        let mut best = [f32::INFINITY; CENTER_BLOCK];
        let mut best_at = [0u32; CENTER_BLOCK];
        // ||x - c||^2 = ||x||^2 + (||c||^2 - 2 x.c); only the bracket varies
        // with c. The data is centred before PQ training, so the cancellation
        // in this form stays small.
        for (b, (norms, dims)) in
            self.norms.iter().zip(self.blocks.chunks_exact(self.width)).enumerate()
        {
            let mut acc = *norms;
            for (&xj, column) in x.iter().zip(dims) {
                for (a, &c) in acc.iter_mut().zip(column) {
                    *a += xj * c;
                }
            }
            let first = (b * CENTER_BLOCK) as u32;
            for l in 0..CENTER_BLOCK {
                // Strictly less: within a lane the earlier centre keeps a tie.
                let better = acc[l] < best[l];
                best[l] = if better { acc[l] } else { best[l] };
                best_at[l] = if better { first + l as u32 } else { best_at[l] };
            }
        }
        // Across lanes, the smallest value and then the smallest index: the
        // same answer as a sequential scan for the first minimum.
        let mut lane = 0;
        for l in 1..CENTER_BLOCK {
            if best[l] < best[lane] || (best[l] == best[lane] && best_at[l] < best_at[lane]) {
                lane = l;
            }
        }
        let x_norm: f32 = x.iter().map(|v| v * v).sum();
        (best_at[lane], (best[lane] + x_norm).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::StandardNormal;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    /// `clusters` blobs of `per` points with unit noise around centres spaced
    /// 100 apart in 3-d.
    fn blobs(clusters: usize, per: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut r = rng(seed);
        let truth: Vec<f32> =
            (0..clusters * 3).map(|i| (i % 7) as f32 * 13.0 + (i / 3) as f32 * 100.0).collect();
        let mut points = Vec::new();
        for i in 0..clusters * per {
            let c = i % clusters;
            for j in 0..3 {
                points.push(truth[c * 3 + j] + r.sample::<f32, _>(StandardNormal));
            }
        }
        (points, truth)
    }

    // Same seed gives bit-identical centres (also on 1 vs 2 threads); another seed differs.
    #[test]
    fn deterministic_for_a_seed() {
        let (points, _) = blobs(20, 200, 1);
        let run = |seed, threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| kmeans(&points, 3, 16, 10, &mut rng(seed)).centers)
        };
        let a = run(9, 1);
        assert_eq!(a, run(9, 2));
        assert_eq!(a, run(9, 1));
        assert_ne!(a, run(10, 2));
    }

    // Five blobs 100 apart with unit noise: every true centre gets a found centre within 0.5.
    #[test]
    fn recovers_well_separated_clusters() {
        let (points, truth) = blobs(5, 400, 2);
        let found = kmeans(&points, 3, 5, 20, &mut rng(3));
        for t in truth.chunks_exact(3) {
            let best =
                found.centers.chunks_exact(3).map(|c| l2_squared(c, t)).fold(f32::MAX, f32::min);
            assert!(best.sqrt() < 0.5, "true centre {t:?} missed by {}", best.sqrt());
        }
        assert!(found.iterations < 20, "should converge early, ran {}", found.iterations);
    }

    // Ten distinct points and k = 256: no panic, and every point is exactly a centre.
    #[test]
    fn fewer_distinct_points_than_k() {
        let points: Vec<f32> = (0..100).flat_map(|i| [(i % 10) as f32, 1.0]).collect();
        let found = kmeans(&points, 2, 256, 12, &mut rng(4));
        assert_eq!(found.centers.len(), 256 * 2);
        let table = CenterTable::new(&found.centers, 2);
        for x in points.chunks_exact(2) {
            assert_eq!(table.nearest(x).1, 0.0);
        }
    }

    // A sample above KMEANS_PP_SAMPLE_MAX goes through the subsampled seeding path and still clusters.
    #[test]
    fn large_sample_uses_subsampled_seeding() {
        let (points, truth) = blobs(4, KMEANS_PP_SAMPLE_MAX / 4 + 100, 5);
        let found = kmeans(&points, 3, 4, 5, &mut rng(6));
        for t in truth.chunks_exact(3) {
            let best =
                found.centers.chunks_exact(3).map(|c| l2_squared(c, t)).fold(f32::MAX, f32::min);
            assert!(best.sqrt() < 0.5);
        }
    }

    // The dot-product nearest search agrees with a brute-force scan.
    #[test]
    fn nearest_matches_brute_force() {
        let mut r = rng(7);
        let centers: Vec<f32> = (0..37 * 5).map(|_| r.sample::<f32, _>(StandardNormal)).collect();
        let table = CenterTable::new(&centers, 5);
        for _ in 0..200 {
            let x: Vec<f32> = (0..5).map(|_| r.sample::<f32, _>(StandardNormal)).collect();
            let (best, d) = table.nearest(&x);
            let exact: Vec<f32> = centers.chunks_exact(5).map(|c| l2_squared(c, &x)).collect();
            let min = exact.iter().copied().fold(f32::MAX, f32::min);
            assert!(
                exact[best as usize] - min <= 1e-5,
                "picked {best} at {} vs {min}",
                exact[best as usize]
            );
            assert!((d - exact[best as usize]).abs() <= 1e-4);
        }
    }
}
#[cfg(test)]
mod zz_bench {
    use super::*;
    #[test]
    #[ignore]
    fn zz_nearest_speed() {
        for width in [2usize, 4, 8, 16] {
            let centers: Vec<f32> = (0..256 * width).map(|i| ((i * 7919) % 1013) as f32 / 100.0).collect();
            let table = CenterTable::new(&centers, width);
            let pts: Vec<f32> = (0..20000 * width).map(|i| ((i * 104729) % 997) as f32 / 100.0).collect();
            let t = std::time::Instant::now();
            let mut s = 0u64;
            for _ in 0..5 { for x in pts.chunks_exact(width) { s += table.nearest(x).0 as u64; } }
            let e = t.elapsed();
            eprintln!("width {width}: {:.1} ns/point, {:.2} GFMA/s  {s}", e.as_nanos() as f64 / 1e5, (1e5 * 256.0 * width as f64) / e.as_secs_f64() / 1e9);
        }
    }
}

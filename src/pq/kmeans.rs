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
/// task and its scratch buffer, small enough to balance over threads.
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
        // Batches of 1024 points: one point is far too little work for a task.
        sample.par_chunks(width).zip(nearest.par_iter_mut()).with_min_len(1024).for_each(
            |(x, d)| {
                *d = d.min(l2_squared(x, center));
            },
        );
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
            let mut scratch = vec![0f32; table.k()];
            let mut changed = 0;
            for ((x, a), d) in rows.chunks_exact(width).zip(assigned).zip(dists) {
                let (best, dist) = table.nearest(x, &mut scratch);
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

/// Independent running minima in the nearest-centre argmin: enough to hide
/// the latency of the compare chain.
const ARGMIN_LANES: usize = 16;

/// k centres laid out for the nearest-centre search: transposed, one column
/// of k values per dimension, pre-scaled by -2, plus the squared norms. The
/// search adds `x_j * column_j` into k accumulators, so its inner loop runs
/// over the k centres, not over the (often tiny) width, and vectorises
/// whatever the width is. (Keeping a block of accumulators in registers and
/// looping over the width inside was measured slower: the compiler does
/// not vectorise that form.)
#[derive(Clone, Debug, PartialEq)]
pub struct CenterTable {
    width: usize,
    k: usize,
    /// `columns[j * k + c]` is -2 times dimension j of centre c. Scaling by
    /// -2 is exact, so [`CenterTable::column`] gives the centres bit for bit
    /// after a multiplication by -0.5.
    columns: Vec<f32>,
    norms: Vec<f32>,
}

impl CenterTable {
    /// Lays out `centers` (k rows of `width` values, concatenated).
    pub fn new(centers: &[f32], width: usize) -> CenterTable {
        assert!(width > 0 && centers.len().is_multiple_of(width), "centres must be whole rows");
        let k = centers.len() / width;
        let mut columns = vec![0f32; k * width];
        for (c, row) in centers.chunks_exact(width).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                columns[j * k + c] = -2.0 * v;
            }
        }
        let norms =
            centers.chunks_exact(width).map(|row| row.iter().map(|v| v * v).sum()).collect();
        CenterTable { width, k, columns, norms }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Dimension `j` of every centre, times -2.
    #[inline]
    pub fn column(&self, j: usize) -> &[f32] {
        &self.columns[j * self.k..(j + 1) * self.k]
    }

    /// The nearest centre to `x` (length `width`) and its squared distance;
    /// ties go to the lower centre index. `scratch` must hold k values.
    #[inline]
    pub fn nearest(&self, x: &[f32], scratch: &mut [f32]) -> (u32, f32) {
        let acc = &mut scratch[..self.k];
        self.partial_distances(x, acc);
        let (best, partial) = argmin(acc);
        let x_norm: f32 = x.iter().map(|v| v * v).sum();
        (best, (partial + x_norm).max(0.0))
    }

    /// `out[c] = ||x - c||^2 - ||x||^2` for every centre c (`out` holds k
    /// values): what orders the centres by distance to `x`.
    #[inline]
    pub fn partial_distances(&self, x: &[f32], out: &mut [f32]) {
        assert_eq!(x.len(), self.width, "point width differs from the centres'");
        let acc = &mut out[..self.k];
        acc.copy_from_slice(&self.norms);
        // ||x - c||^2 = ||x||^2 + (||c||^2 - 2 x.c); only the bracket varies
        // with c. The data is centred before PQ training, so the cancellation
        // in this form stays small.
        for (&xj, column) in x.iter().zip(self.columns.chunks_exact(self.k)) {
            for (a, &c) in acc.iter_mut().zip(column) {
                *a += xj * c;
            }
        }
    }
}

/// Index and value of the first smallest element (ties to the lower index,
/// as a sequential scan gives). The minimum comes from 16 independent
/// running minima (no long dependency chain), then a scan for the first
/// block of 16 holding it. This measured fastest of the safe forms tried:
/// stable Rust does not vectorise an argmin without fast-math, and a
/// one-pass value-and-index scan runs about 40% slower.
#[inline]
fn argmin(values: &[f32]) -> (u32, f32) {
    let mut lanes = [f32::INFINITY; ARGMIN_LANES];
    let (blocks, rest) = values.as_chunks::<ARGMIN_LANES>();
    for block in blocks {
        for (lane, &v) in lanes.iter_mut().zip(block) {
            *lane = if v < *lane { v } else { *lane };
        }
    }
    let min = lanes.iter().chain(rest).fold(f32::INFINITY, |m, &v| if v < m { v } else { m });
    // The first block holding the minimum: a whole-block test per step is
    // cheaper than testing element by element.
    let first_block =
        blocks.iter().position(|block| block.iter().fold(false, |hit, &v| hit | (v == min)));
    let at = match first_block {
        Some(b) => b * ARGMIN_LANES + blocks[b].iter().position(|&v| v == min).unwrap_or(0),
        // In the tail, or nowhere: only all-NaN input (impossible for finite
        // points and centres) has no minimum, and centre 0 is then as good
        // an answer as any.
        None => rest.iter().position(|&v| v == min).map_or(0, |i| blocks.len() * ARGMIN_LANES + i),
    };
    // k <= KMEANS_K_MAX, so the index fits a u32.
    (at as u32, min)
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
        let mut scratch = vec![0f32; 256];
        for x in points.chunks_exact(2) {
            assert_eq!(table.nearest(x, &mut scratch).1, 0.0);
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
        let mut scratch = vec![0f32; 37];
        for _ in 0..200 {
            let x: Vec<f32> = (0..5).map(|_| r.sample::<f32, _>(StandardNormal)).collect();
            let (best, d) = table.nearest(&x, &mut scratch);
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

    // argmin returns the first minimum, across lanes, blocks and the tail past the last full block.
    #[test]
    fn argmin_takes_the_first_minimum() {
        let mut v: Vec<f32> = (0..45).map(|i| 100.0 - i as f32).collect();
        assert_eq!(argmin(&v), (44, 56.0));
        v[3] = -1.0;
        v[19] = -1.0;
        v[40] = -1.0;
        assert_eq!(argmin(&v), (3, -1.0));
        v[35] = -2.0;
        v[44] = -2.0;
        assert_eq!(argmin(&v), (35, -2.0));
        assert_eq!(argmin(&[3.0, 1.0, 1.0]), (1, 1.0));
    }
}

//! The space product quantization works in, per metric.
//!
//! Search steers by PQ distances, and L2 tables steer best because they
//! include the squared norm of each reconstruction, which quantization
//! distorts (an inner-product table ignores it). So every index uses L2
//! tables, in a space chosen so that L2 there ranks as the metric does:
//! - `l2`: the vectors themselves;
//! - `cosine`: the normalised vectors (L2 = 2 - 2 cos);
//! - `ip`: vectors augmented with one coordinate `sqrt(M^2 - |x|^2)`
//!   (M = the largest norm of the index) and queries with a 0, so that
//!   `|[q,0] - [x,a]|^2 = |q|^2 + M^2 - 2 q.x` ranks as the inner product
//!   (the MIPS-to-L2 reduction, as DiskANN's MIPS path does too).
//!   The codebook of an ip index therefore has dimension dim + 1.
//!
//! Measured on debian-384 (recall@10 at L = 60): ip with inner-product tables
//! 0.921, with augmented L2 tables the same as l2 (see bench/README.md).

use crate::distance::Metric;

/// Dimension of the PQ space for vectors of dimension `dim`.
pub fn pq_dim(metric: Metric, dim: usize) -> usize {
    match metric {
        Metric::InnerProduct => dim + 1,
        _ => dim,
    }
}

/// The metric of every lookup table.
pub const TABLE_METRIC: Metric = Metric::L2;

/// Whether a row fits the space it is put into.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fit {
    /// The row is represented exactly as the reduction says.
    Inside,
    /// Inner product only: the row's norm exceeds M, so `M^2 - |x|^2 < 0` and
    /// its extra coordinate is clamped to 0. Its PQ distances then come out
    /// `|x|^2 - M^2` too large, which understates it in the steering (never
    /// in the final ranking: the rerank is exact). Callers count these rows;
    /// a space with any must be rebuilt with a larger M (see ARCHITECTURE.md).
    OverNorm { norm: f32 },
}

/// The space an index's PQ codes (and, for ip, its graph) live in: the
/// metric and, for inner product, M, the norm the MIPS-to-L2 reduction
/// augments every vector to. M is persisted with the index (graph header,
/// PQ file and manifest), so points added later are placed in the same space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PqSpace {
    pub metric: Metric,
    /// M for inner product (the largest norm of the build's input); 0 otherwise.
    pub ip_norm_max: f32,
}

impl PqSpace {
    pub fn new(metric: Metric, ip_norm_max: f32) -> PqSpace {
        PqSpace {
            metric,
            ip_norm_max: if metric == Metric::InnerProduct { ip_norm_max } else { 0.0 },
        }
    }

    /// Dimension of this space for vectors of dimension `dim`.
    pub fn dim(&self, dim: usize) -> usize {
        pq_dim(self.metric, dim)
    }

    /// The extra coordinate of a vector of squared norm `norm_sq`
    /// (inner product only), and whether it fits.
    pub fn augmentation(&self, norm_sq: f32) -> (f32, Fit) {
        let m_sq = self.ip_norm_max * self.ip_norm_max;
        if norm_sq <= m_sq {
            ((m_sq - norm_sq).sqrt(), Fit::Inside)
        } else {
            (0.0, Fit::OverNorm { norm: norm_sq.sqrt() })
        }
    }

    /// Appends a (validated, for cosine already normalised) row in this space.
    pub fn push_row(&self, row: impl Iterator<Item = f32> + Clone, out: &mut Vec<f32>) -> Fit {
        out.extend(row.clone());
        if self.metric == Metric::InnerProduct {
            let n: f32 = row.map(|x| x * x).sum();
            let (a, fit) = self.augmentation(n);
            out.push(a);
            return fit;
        }
        Fit::Inside
    }

    /// Writes a prepared query in this space into `out`.
    pub fn query(&self, q: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(q);
        if self.metric == Metric::InnerProduct {
            out.push(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L2 in the augmented space orders points as the inner product does.
    #[test]
    fn augmented_l2_ranks_as_inner_product() {
        let pts = [[3.0f32, 0.0], [1.0, 1.0], [0.0, -2.0], [2.0, 2.0]];
        let m: f32 = pts.iter().map(|p| p[0] * p[0] + p[1] * p[1]).fold(0.0, f32::max);
        let space = PqSpace::new(Metric::InnerProduct, m.sqrt());
        let q = [0.5f32, 0.7];
        let mut aug = Vec::new();
        let mut qa = Vec::new();
        space.query(&q, &mut qa);
        let mut by_l2: Vec<(f32, usize)> = Vec::new();
        let mut by_ip: Vec<(f32, usize)> = Vec::new();
        for (i, p) in pts.iter().enumerate() {
            aug.clear();
            assert_eq!(space.push_row(p.iter().copied(), &mut aug), Fit::Inside);
            assert_eq!(aug.len(), 3);
            by_l2.push((aug.iter().zip(&qa).map(|(a, b)| (a - b) * (a - b)).sum(), i));
            by_ip.push((-(p[0] * q[0] + p[1] * q[1]), i));
        }
        by_l2.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_ip.sort_by(|a, b| a.0.total_cmp(&b.0));
        let order = |v: &[(f32, usize)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
        assert_eq!(order(&by_l2), order(&by_ip));
    }
}

#[cfg(test)]
mod fit_tests {
    use super::*;

    /// A row longer than M is placed with a zero extra coordinate and
    /// reported, never silently; l2 and cosine rows always fit.
    #[test]
    fn over_norm_rows_are_reported() {
        let space = PqSpace::new(Metric::InnerProduct, 5.0);
        let mut out = Vec::new();
        assert_eq!(space.push_row([3.0f32, 4.0].into_iter(), &mut out), Fit::Inside);
        assert_eq!(out, vec![3.0, 4.0, 0.0]);
        out.clear();
        assert_eq!(
            space.push_row([6.0f32, 8.0].into_iter(), &mut out),
            Fit::OverNorm { norm: 10.0 }
        );
        assert_eq!(out, vec![6.0, 8.0, 0.0]);
        let l2 = PqSpace::new(Metric::L2, 5.0);
        assert_eq!(l2.ip_norm_max, 0.0);
        assert_eq!(l2.push_row([60.0f32].into_iter(), &mut out), Fit::Inside);
    }
}

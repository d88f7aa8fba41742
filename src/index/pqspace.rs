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

/// Appends a (validated, for cosine already normalised) row in PQ space.
/// `norm_sq_max` is M^2, used only for inner product.
pub fn push_row(
    row: impl Iterator<Item = f32> + Clone,
    metric: Metric,
    norm_sq_max: f32,
    out: &mut Vec<f32>,
) {
    out.extend(row.clone());
    if metric == Metric::InnerProduct {
        let n: f32 = row.map(|x| x * x).sum();
        out.push((norm_sq_max - n).max(0.0).sqrt());
    }
}

/// Writes a prepared query in PQ space into `out`.
pub fn query(q: &[f32], metric: Metric, out: &mut Vec<f32>) {
    out.clear();
    out.extend_from_slice(q);
    if metric == Metric::InnerProduct {
        out.push(0.0);
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
        let q = [0.5f32, 0.7];
        let mut aug = Vec::new();
        let mut qa = Vec::new();
        query(&q, Metric::InnerProduct, &mut qa);
        let mut by_l2: Vec<(f32, usize)> = Vec::new();
        let mut by_ip: Vec<(f32, usize)> = Vec::new();
        for (i, p) in pts.iter().enumerate() {
            aug.clear();
            push_row(p.iter().copied(), Metric::InnerProduct, m, &mut aug);
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

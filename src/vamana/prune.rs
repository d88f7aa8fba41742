//! RobustPrune (DiskANN, Algorithm 2): choose at most R out-neighbours of p
//! among candidates, skipping a candidate c when an already chosen p* is
//! alpha-times closer to it than p is (`alpha * d(p*, c) <= d(p, c)`), which
//! keeps long edges in directions not yet covered.

use super::Graph;
use crate::distance::DistanceElement;

/// Reusable scratch for [`robust_prune`].
#[derive(Default)]
pub struct PruneScratch {
    cands: Vec<(f32, u32)>,
    pruned: Vec<bool>,
}

/// Prunes `candidates` (id, distance to p) into `out`. `p` itself and
/// duplicates are ignored; the nearest [`super::PRUNE_CANDIDATES_MAX`] are considered.
pub fn robust_prune<T: DistanceElement>(
    g: &Graph<'_, T>,
    p: u32,
    candidates: impl IntoIterator<Item = (u32, f32)>,
    alpha: f32,
    r: usize,
    scratch: &mut PruneScratch,
    out: &mut Vec<u32>,
) {
    let c = &mut scratch.cands;
    c.clear();
    c.extend(candidates.into_iter().filter(|&(id, _)| id != p).map(|(id, d)| (d, id)));
    c.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    c.dedup_by_key(|x| x.1);
    c.truncate(super::PRUNE_CANDIDATES_MAX);
    let pruned = &mut scratch.pruned;
    pruned.clear();
    pruned.resize(c.len(), false);
    out.clear();
    for i in 0..c.len() {
        if out.len() >= r {
            break;
        }
        if pruned[i] {
            continue;
        }
        let (_, star) = c[i];
        out.push(star);
        for j in i + 1..c.len() {
            if pruned[j] {
                continue;
            }
            let (dpc, cid) = c[j];
            if alpha * g.node_distance(star, cid) <= dpc {
                pruned[j] = true;
            }
        }
    }
}

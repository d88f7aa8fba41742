//! RobustPrune (DiskANN, Algorithm 2): choose at most R out-neighbours of p
//! among candidates, skipping a candidate c when an already chosen p* is
//! alpha-times closer to it than p is (`alpha * d(p*, c) <= d(p, c)`), which
//! keeps long edges in directions not yet covered. Candidates are taken in
//! rounds of growing alpha (1, 1.2, ... up to alpha), as DiskANN's occlusion
//! does, so the most diverse edges come first. With `saturate`, the
//! slots left free below R are then filled with the nearest pruned
//! candidates (as DiskANN's disk build does): a disk record has room for R
//! ids whatever the degree, so the extra edges cost no I/O and give the
//! search more PQ-scored directions per read.

use super::Graph;
use crate::distance::DistanceElement;

/// The pruning rule: alpha, the degree bound R, and whether to saturate.
#[derive(Clone, Copy, Debug)]
pub struct PruneRule {
    pub alpha: f32,
    pub degree_max: usize,
    pub saturate: bool,
}

/// Factor by which alpha grows between pruning rounds.
const ALPHA_ROUND_STEP: f32 = 1.2;
/// Occlusion mark of a chosen candidate.
const CHOSEN: f32 = f32::MAX;

/// Reusable scratch for [`robust_prune`].
#[derive(Default)]
pub struct PruneScratch {
    cands: Vec<(f32, u32)>,
    occlusion: Vec<f32>,
    pruned: Vec<bool>,
}

/// Prunes `candidates` (id, distance to p) into `out`. `p` itself and
/// duplicates are ignored; the nearest [`super::PRUNE_CANDIDATES_MAX`] are considered.
pub fn robust_prune<T: DistanceElement>(
    g: &Graph<'_, T>,
    p: u32,
    candidates: impl IntoIterator<Item = (u32, f32)>,
    rule: PruneRule,
    scratch: &mut PruneScratch,
    out: &mut Vec<u32>,
) {
    robust_prune_by(p, candidates, rule, scratch, out, |a, b| g.node_distance(a, b));
}

/// [`robust_prune`] over any id space: `dist(a, b)` is the distance
/// between candidates `a` and `b` (the collection's delta index and the
/// streaming merge, whose nodes are not one in-memory [`Graph`]).
pub fn robust_prune_by(
    p: u32,
    candidates: impl IntoIterator<Item = (u32, f32)>,
    rule: PruneRule,
    scratch: &mut PruneScratch,
    out: &mut Vec<u32>,
    dist: impl Fn(u32, u32) -> f32,
) {
    let PruneRule { alpha, degree_max: r, saturate } = rule;
    let c = &mut scratch.cands;
    c.clear();
    c.extend(candidates.into_iter().filter(|&(id, _)| id != p).map(|(id, d)| (d, id)));
    c.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    c.dedup_by_key(|x| x.1);
    c.truncate(super::PRUNE_CANDIDATES_MAX);
    // occlusion[j]: the largest d(p, c_j) / d(p*, c_j) over the chosen p*
    // so far (c_j is occluded at alpha once it reaches alpha); chosen
    // candidates are marked CHOSEN.
    let occlusion = &mut scratch.occlusion;
    occlusion.clear();
    occlusion.resize(c.len(), 0.0);
    out.clear();
    // Rounds of growing alpha (1, 1.2, 1.44, ... up to alpha), as DiskANN
    // does: the most diverse edges (those that survive alpha = 1) are taken
    // first, and the slots left are filled by the longer-range alpha rule.
    // Measured on 500K x 128 u8: recall@10 at L=120 rose from 0.9498 (one
    // round at alpha) to the value in bench/README.md.
    let mut round_alpha = 1.0f32;
    loop {
        for i in 0..c.len() {
            if out.len() >= r {
                break;
            }
            if occlusion[i] > round_alpha {
                continue;
            }
            occlusion[i] = CHOSEN;
            let (_, star) = c[i];
            out.push(star);
            for j in i + 1..c.len() {
                if occlusion[j] > alpha {
                    continue;
                }
                let (dpc, cid) = c[j];
                let d = dist(star, cid);
                let ratio = if d > 0.0 { dpc / d } else { f32::INFINITY };
                occlusion[j] = occlusion[j].max(ratio);
            }
        }
        if out.len() >= r || round_alpha >= alpha {
            break;
        }
        round_alpha = (round_alpha * ALPHA_ROUND_STEP).min(alpha);
    }
    let pruned = &mut scratch.pruned;
    pruned.clear();
    pruned.extend(occlusion.iter().map(|&o| o != CHOSEN));
    if saturate && out.len() < r {
        for i in 0..c.len() {
            if out.len() >= r {
                break;
            }
            if pruned[i] {
                out.push(c[i].1);
            }
        }
    }
}

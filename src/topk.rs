//! A bounded best-k collector: keeps the k smallest `(distance, id)` pairs,
//! ties broken by the smaller id, so results are deterministic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A `(distance, id)` pair ordered by distance, then id (total order on f32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbor {
    pub distance: f32,
    pub id: u32,
}

impl Eq for Neighbor {}

impl Ord for Neighbor {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance.total_cmp(&other.distance).then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Neighbor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Keeps the best `k` neighbours seen so far.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Neighbor>,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK { k, heap: BinaryHeap::with_capacity(k + 1) }
    }

    /// The distance a new candidate must beat (or tie with a smaller id) to
    /// enter; `+inf` until k are held.
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::INFINITY
        } else {
            self.heap.peek().map_or(f32::INFINITY, |n| n.distance)
        }
    }

    #[inline]
    pub fn push(&mut self, distance: f32, id: u32) {
        if self.k == 0 {
            return;
        }
        let n = Neighbor { distance, id };
        if self.heap.len() < self.k {
            self.heap.push(n);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && n < *worst
        {
            *worst = n;
        }
    }

    /// [`Self::push`] unless `id` is held already (a search that scores a
    /// record twice: once with its sector, once when expanded).
    #[inline]
    pub fn push_unique(&mut self, distance: f32, id: u32) {
        if distance <= self.threshold() && !self.heap.iter().any(|n| n.id == id) {
            self.push(distance, id);
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The held neighbours, best first.
    pub fn into_sorted(self) -> Vec<Neighbor> {
        self.heap.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TopK keeps exactly the k smallest, ties by smaller id, best first.
    #[test]
    fn keeps_k_smallest_with_id_tiebreak() {
        let mut t = TopK::new(3);
        for (d, id) in [(5.0, 1), (1.0, 9), (1.0, 4), (3.0, 2), (0.5, 7), (1.0, 3)] {
            t.push(d, id);
        }
        let got: Vec<(f32, u32)> = t.into_sorted().iter().map(|n| (n.distance, n.id)).collect();
        assert_eq!(got, vec![(0.5, 7), (1.0, 3), (1.0, 4)]);
    }
}

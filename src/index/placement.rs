//! Packed placement: which nodes share a sector.
//!
//! A sector read for one node brings every record packed beside it. In row
//! order those are the nodes of the neighbouring input rows, of no use to
//! the query; numbered so that a node's graph neighbours sit in its sector,
//! they are often the next nodes the search expands, and a search that
//! keeps every sector it has read (`search::Sectors`) expands them without
//! another read (Starling, SIGMOD'24, packs blocks the same way; PageANN
//! makes whole pages its nodes).
//!
//! The packing is greedy and deterministic: rows are visited breadth-first
//! from the medoid; each sector is seeded with the first unplaced row of
//! that order and filled breadth-first over the graph from its members (the
//! lists are RobustPrune's, nearest first); a sector still not full when
//! its members' neighbours are all placed takes the next unplaced rows of
//! the order. Every sector but the last is full, so the file is no larger.
//! Cost: O(N x R) time, 12 bytes a node of RAM (the in-memory build holds
//! far more).

/// A numbering of the nodes: `slot_of_row[r]` is row r's node id, and
/// `row_of_slot` its inverse.
pub struct Packing {
    pub slot_of_row: Vec<u32>,
    pub row_of_slot: Vec<u32>,
}

const UNPLACED: u32 = u32::MAX;

/// Numbers `n` rows `per_sector` to a sector (see the module doc):
/// `neighbors(row, out)` appends a row's list; the medoid becomes node 0.
pub fn pack(
    n: u32,
    per_sector: usize,
    medoid: u32,
    neighbors: impl Fn(u32, &mut Vec<u32>),
) -> Packing {
    assert!(per_sector >= 1 && medoid < n);
    let n_us = n as usize;
    // Breadth-first order from the medoid, then the rows it does not reach.
    let mut order: Vec<u32> = Vec::with_capacity(n_us);
    let mut slot_of_row = vec![UNPLACED; n_us];
    let mut list = Vec::new();
    {
        // `slot_of_row` doubles as the BFS's seen mark (0), reset below.
        slot_of_row[medoid as usize] = 0;
        order.push(medoid);
        let mut i = 0;
        while i < order.len() {
            list.clear();
            neighbors(order[i], &mut list);
            i += 1;
            for &u in &list {
                if slot_of_row[u as usize] == UNPLACED {
                    slot_of_row[u as usize] = 0;
                    order.push(u);
                }
            }
        }
        for r in 0..n {
            if slot_of_row[r as usize] == UNPLACED {
                order.push(r);
            }
        }
        slot_of_row.fill(UNPLACED);
    }
    let mut row_of_slot: Vec<u32> = Vec::with_capacity(n_us);
    fn place(r: u32, slot_of_row: &mut [u32], row_of_slot: &mut Vec<u32>) {
        slot_of_row[r as usize] = row_of_slot.len() as u32;
        row_of_slot.push(r);
    }
    let mut next = 0usize;
    while row_of_slot.len() < n_us {
        let first = row_of_slot.len();
        let full = |len: usize| len - first >= per_sector;
        while slot_of_row[order[next] as usize] != UNPLACED {
            next += 1;
        }
        place(order[next], &mut slot_of_row, &mut row_of_slot);
        let mut k = first;
        while !full(row_of_slot.len()) && k < row_of_slot.len() {
            list.clear();
            neighbors(row_of_slot[k], &mut list);
            k += 1;
            for &u in &list {
                if full(row_of_slot.len()) {
                    break;
                }
                if slot_of_row[u as usize] == UNPLACED {
                    place(u, &mut slot_of_row, &mut row_of_slot);
                }
            }
        }
        while !full(row_of_slot.len()) && row_of_slot.len() < n_us {
            while slot_of_row[order[next] as usize] != UNPLACED {
                next += 1;
            }
            place(order[next], &mut slot_of_row, &mut row_of_slot);
        }
    }
    Packing { slot_of_row, row_of_slot }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring where each row links to its two ring neighbours, numbered
    /// with a stride so that row order puts no neighbours together.
    fn ring(n: u32, stride: u32) -> Vec<Vec<u32>> {
        let pos = |r: u32| (r as u64 * stride as u64 % n as u64) as u32;
        let mut at = vec![0u32; n as usize];
        for r in 0..n {
            at[pos(r) as usize] = r;
        }
        (0..n)
            .map(|r| {
                let p = pos(r);
                vec![at[((p + 1) % n) as usize], at[((p + n - 1) % n) as usize]]
            })
            .collect()
    }

    #[test]
    fn packing_is_a_permutation_that_puts_neighbours_together() {
        let (n, per) = (1000u32, 4usize);
        let g = ring(n, 7);
        let p = pack(n, per, 3, |r, out| out.extend_from_slice(&g[r as usize]));
        assert_eq!(p.row_of_slot.len(), n as usize);
        assert_eq!(p.slot_of_row[3], 0, "the medoid is node 0");
        for (slot, &row) in p.row_of_slot.iter().enumerate() {
            assert_eq!(p.slot_of_row[row as usize], slot as u32);
        }
        // Share of edges inside a sector: row order has none (stride 7 on a
        // ring), the packing most.
        let inside = |sector_of: &dyn Fn(u32) -> u32| {
            let mut k = 0;
            for r in 0..n {
                k += g[r as usize].iter().filter(|&&u| sector_of(u) == sector_of(r)).count();
            }
            k as f64 / (2 * n) as f64
        };
        let row_order = inside(&|r| r / per as u32);
        let packed = inside(&|r| p.slot_of_row[r as usize] / per as u32);
        assert_eq!(row_order, 0.0);
        assert!(packed > 0.7, "packed share of edges within a sector {packed}");
    }

    #[test]
    fn packing_fills_every_sector_and_is_deterministic() {
        // Two components: the second is not reached from the medoid.
        let n = 103u32;
        let g: Vec<Vec<u32>> =
            (0..n).map(|r| if r < 50 { vec![(r + 1) % 50] } else { vec![] }).collect();
        let a = pack(n, 5, 0, |r, out| out.extend_from_slice(&g[r as usize]));
        let b = pack(n, 5, 0, |r, out| out.extend_from_slice(&g[r as usize]));
        assert_eq!(a.row_of_slot, b.row_of_slot);
        let mut seen = a.row_of_slot.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert_eq!(pack(1, 5, 0, |_, _| {}).row_of_slot, vec![0]);
    }
}

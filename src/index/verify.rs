//! `basalt verify` and `basalt inspect`: check every checksum and graph
//! invariant of an index, or describe it.
//!
//! Verification reads each file whole (streamed): the manifest's sizes and
//! XXH3 hashes, the graph header, every node record (checksum, degree <= R,
//! ids < N, no self loop), the PQ codebook and the codes, and walks the graph
//! from the medoid to count the nodes a search can reach. The first bad
//! record is named by node id, sector and byte offset.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{GRAPH_FILE, IndexError, IndexFiles};
use crate::format::graph::{GraphHeader, Layout, RecordFault};
use crate::format::{FormatError, SECTOR_BYTES};

const READ_CHUNK_BYTES: usize = 8 << 20;

/// XXH3-64 of a whole file, streamed.
///
/// Not CRC-32C: a CRC is linear, and over a file made of records that each
/// end with their own CRC-32C the whole-file CRC does not depend on the
/// records' contents at all (measured: two different graphs of the same
/// shape had the same whole-file CRC). XXH3 is not linear, so the manifest's
/// value identifies the bytes.
pub fn file_xxh3(path: &Path) -> Result<u64, IndexError> {
    let f = File::open(path).map_err(|e| IndexError::io(path, "open", e))?;
    let mut r = BufReader::with_capacity(READ_CHUNK_BYTES, f);
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    loop {
        let got = r.read(&mut buf).map_err(|e| IndexError::io(path, "read", e))?;
        if got == 0 {
            return Ok(h.digest());
        }
        h.update(&buf[..got]);
    }
}

/// What `verify` found (on success).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub nodes: u64,
    pub edges: u64,
    pub sectors: u64,
    pub files_checked: usize,
    /// Nodes reachable from the medoid (all of them, or verify fails).
    pub reachable: u64,
    /// Breadth-first passes the reachability check took.
    pub reachability_passes: u32,
    pub build_id: String,
    pub generation: u64,
}

/// Degree statistics of the graph file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DegreeStats {
    pub min: u32,
    pub max: u32,
    pub mean: f64,
    /// Count of nodes per degree decile of R: [0, R/10), [R/10, 2R/10) ... [R, R].
    pub histogram: Vec<u64>,
}

/// Checks every checksum and graph invariant of the index at `dir`: the
/// manifest and its files ([`IndexFiles::open`]), the graph header, every
/// node record (checksum seeded with the build id, degree <= R, ids < N, no
/// self loop), the codebook and codes (hash, identity, shape), that every
/// node is reachable from the medoid, and last the graph file's hash.
pub fn verify_index(dir: &Path) -> Result<VerifyReport, IndexError> {
    let files = IndexFiles::open(dir)?;
    let header = files.graph_header()?;
    let graph = files.path(GRAPH_FILE);
    // A collection's generation: its free slots (tag 0 in `ids`) hold empty
    // records that no edge may point to; they count as reached.
    let free = free_slots(&files, &header)?;
    let mut bad_free: Option<(u32, u32)> = None;
    let (nodes, edges, sectors) = scan_records(&graph, &header, |id, degree| {
        if degree > 0 && bad_free.is_none() && free.as_ref().is_some_and(|f| is_set(f, id)) {
            bad_free = Some((id, degree));
        }
    })?;
    if let Some((id, degree)) = bad_free {
        return Err(IndexError::Input(format!(
            "{}: node {id} is a free slot but has {degree} edges",
            graph.display()
        )));
    }
    files.codebook()?;
    files.codes()?;
    files.hot()?;
    if header.placement == crate::format::graph::Placement::Packed
        && files.manifest.entry(super::IDS_FILE).is_none()
    {
        return Err(IndexError::Input(format!(
            "{}: the graph is packed (nodes numbered apart from the input rows) but the \
             manifest lists no ids file mapping them back",
            graph.display()
        )));
    }
    for name in [super::IDS_FILE, super::CHANGES_FILE] {
        if let Some(e) = files.manifest.entry(name) {
            let p = files.path(name);
            let h = file_xxh3(&p)?;
            if h != e.xxh3 {
                return Err(FormatError::corrupt(
                    &p,
                    0,
                    format!("file checksum (xxh3) {h:#018x} != manifest {:#018x}", e.xxh3),
                )
                .into());
            }
        }
    }
    let reach = reachability_with(&graph, &header, free.as_deref())?;
    if let Some(first) = reach.first_unreachable {
        return Err(IndexError::Input(format!(
            "{}: {} of {} nodes cannot be reached from the medoid {} (node {first} is one): \
             searches can never return them; rebuild with a larger --R",
            graph.display(),
            nodes - reach.reached,
            nodes,
            header.medoid
        )));
    }
    // Whole-file checksum of the graph last (pq, codes and hot were hashed as
    // they were read): the record scan names a bad node precisely, this catches
    // anything else (padding, header).
    let entry = files.manifest.entry(GRAPH_FILE).map(|f| f.xxh3);
    let hash = file_xxh3(&graph)?;
    if entry != Some(hash) {
        return Err(FormatError::corrupt(
            &graph,
            0,
            format!("file checksum (xxh3) {hash:#018x} != manifest {:#018x}", entry.unwrap_or(0)),
        )
        .into());
    }
    let m = &files.manifest;
    Ok(VerifyReport {
        nodes,
        edges,
        sectors,
        files_checked: m.files.len() + 1,
        reachable: reach.reached,
        reachability_passes: reach.passes,
        build_id: m.build_id.clone(),
        generation: m.generation,
    })
}

/// Streams every record of the graph file, checking it; `visit(id, degree)`
/// sees each good record. Returns (nodes, edges, data sectors).
pub fn scan_records(
    path: &Path,
    header: &GraphHeader,
    mut visit: impl FnMut(u32, u32),
) -> Result<(u64, u64, u64), IndexError> {
    let l = header.layout();
    let f = File::open(path).map_err(|e| IndexError::io(path, "open", e))?;
    let mut r = BufReader::with_capacity(READ_CHUNK_BYTES, f);
    let mut sector = vec![0u8; SECTOR_BYTES * l.sectors_per_record as usize];
    r.read_exact(&mut sector[..SECTOR_BYTES]).map_err(|e| IndexError::io(path, "read", e))?;
    let mut edges = 0u64;
    let mut id: u64 = 0;
    while id < l.count {
        let span = l.sectors_per_record as usize * SECTOR_BYTES;
        r.read_exact(&mut sector[..span]).map_err(|e| IndexError::io(path, "read", e))?;
        let in_this = if l.records_per_sector > 0 {
            (l.records_per_sector as u64).min(l.count - id)
        } else {
            1
        };
        for k in 0..in_this {
            let nid = (id + k) as u32;
            let at = l.offset_in_sector(nid);
            let rec = &sector[at..at + l.record_bytes as usize];
            match l.decode_record(nid, rec, true) {
                Ok(v) => {
                    edges += v.degree() as u64;
                    visit(nid, v.degree() as u32);
                }
                Err(fault) => return Err(record_error(path, &l, nid, fault)),
            }
        }
        id += in_this;
    }
    Ok((l.count, edges, l.data_sectors))
}

fn record_error(path: &Path, l: &Layout, id: u32, fault: RecordFault) -> IndexError {
    FormatError::corrupt(
        path,
        l.record_offset(id),
        format!("node {id} (sector {}): {fault}", l.sector_of(id)),
    )
    .into()
}

/// Largest read of the reachability passes (sectors).
const REACH_WINDOW_SECTORS: u64 = 64;

/// The result of [`reachability`].
pub struct Reachability {
    pub reached: u64,
    pub first_unreachable: Option<u32>,
    pub passes: u32,
}

/// The first set bit at or after `from` in `bits` (bit i = node i), below `end`.
fn next_set(bits: &[u64], from: u64, end: u64) -> Option<u64> {
    let mut w = (from / 64) as usize;
    if w >= bits.len() || from >= end {
        return None;
    }
    let mut word = bits[w] & (u64::MAX << (from % 64));
    loop {
        if word != 0 {
            let id = w as u64 * 64 + u64::from(word.trailing_zeros());
            return (id < end).then_some(id);
        }
        w += 1;
        if w >= bits.len() || (w as u64) * 64 >= end {
            return None;
        }
        word = bits[w];
    }
}

/// Which nodes a search from the medoid can reach, in memory bounded by
/// three bitmaps of N bits whatever the size of the graph (reached, this
/// level, next level): breadth-first by levels, each level a pass that
/// reads, in file order, only the sectors of the nodes first reached in the
/// level before (coalesced into reads of at most [`REACH_WINDOW_SECTORS`]
/// sectors). Every node's record is read once.
pub fn reachability(path: &Path, header: &GraphHeader) -> Result<Reachability, IndexError> {
    reachability_with(path, header, None)
}

fn is_set(bits: &[u64], id: u32) -> bool {
    bits[(id / 64) as usize] >> (id % 64) & 1 == 1
}

/// The free slots of a collection's generation as a bitmap (N bits), if it
/// has an ids file.
fn free_slots(files: &IndexFiles, header: &GraphHeader) -> Result<Option<Vec<u64>>, IndexError> {
    if files.manifest.entry(super::IDS_FILE).is_none() {
        return Ok(None);
    }
    let p = files.path(super::IDS_FILE);
    let ids = crate::collection::idfile::IdFile::open(&p, files.manifest.ident(), header.count)?;
    let mut bits = vec![0u64; header.count.div_ceil(64) as usize];
    for (slot, id) in ids.scan().enumerate() {
        if id?.is_none() {
            bits[slot / 64] |= 1 << (slot % 64);
        }
    }
    Ok(Some(bits))
}

/// [`reachability`] where the slots set in `free` count as reached and an
/// edge to one of them is an error.
pub fn reachability_with(
    path: &Path,
    header: &GraphHeader,
    free: Option<&[u64]>,
) -> Result<Reachability, IndexError> {
    let l = header.layout();
    let n = l.count;
    let words = n.div_ceil(64) as usize;
    let mut reached = free.map_or_else(|| vec![0u64; words], <[u64]>::to_vec);
    let free_count: u64 = reached.iter().map(|w| u64::from(w.count_ones())).sum();
    let mut level = vec![0u64; words];
    let mut next = vec![0u64; words];
    let set = |bits: &mut [u64], id: u64| -> bool {
        let (w, b) = ((id / 64) as usize, id % 64);
        let was = bits[w] >> b & 1 == 1;
        bits[w] |= 1 << b;
        !was
    };
    let medoid = u64::from(header.medoid);
    if free.is_some_and(|f| is_set(f, medoid as u32)) {
        if free_count == n {
            // Every point deleted: nothing to reach (the merge keeps the
            // old medoid as the entry of a generation of free slots).
            return Ok(Reachability { reached: n, first_unreachable: None, passes: 0 });
        }
        return Err(IndexError::Input(format!(
            "{}: the medoid {medoid} is a free slot",
            path.display()
        )));
    }
    set(&mut reached, medoid);
    set(&mut level, medoid);
    let mut count = 1 + free_count;
    let mut passes = 0u32;
    let file = File::open(path).map_err(|e| IndexError::io(path, "open", e))?;
    let mut window: Vec<u8> = Vec::new();
    let span = u64::from(l.sectors_per_record);
    let window_sectors = REACH_WINDOW_SECTORS.max(span);
    while level.iter().any(|&w| w != 0) {
        passes += 1;
        // A new pass starts with no window: the file is read front to back.
        let mut window_first = u64::MAX;
        let mut cursor = next_set(&level, 0, n);
        while let Some(id) = cursor {
            let first = l.sector_of(id as u32);
            let in_window = window_first != u64::MAX
                && first >= window_first
                && first + span <= window_first + (window.len() / SECTOR_BYTES) as u64;
            if !in_window {
                // Read from this record's sector up to the last record of
                // this level that fits in one window.
                let mut last = first + span;
                let mut probe = next_set(&level, id + 1, n);
                while let Some(p) = probe {
                    let end = l.sector_of(p as u32) + span;
                    if end - first > window_sectors {
                        break;
                    }
                    last = end;
                    probe = next_set(&level, p + 1, n);
                }
                window.resize(((last - first) as usize) * SECTOR_BYTES, 0);
                file.read_exact_at(&mut window, first * SECTOR_BYTES as u64)
                    .map_err(|e| IndexError::io(path, "read", e))?;
                window_first = first;
            }
            let at =
                ((first - window_first) as usize) * SECTOR_BYTES + l.offset_in_sector(id as u32);
            let rec = &window[at..at + l.record_bytes as usize];
            let view = l
                .decode_record(id as u32, rec, true)
                .map_err(|f| record_error(path, &l, id as u32, f))?;
            for nb in view.neighbors() {
                if free.is_some_and(|f| is_set(f, nb)) {
                    return Err(IndexError::Input(format!(
                        "{}: node {id} has an edge to free slot {nb}",
                        path.display()
                    )));
                }
                if set(&mut reached, u64::from(nb)) {
                    count += 1;
                    set(&mut next, u64::from(nb));
                }
            }
            cursor = next_set(&level, id + 1, n);
        }
        std::mem::swap(&mut level, &mut next);
        next.iter_mut().for_each(|w| *w = 0);
    }
    let first_unreachable = (count < n)
        .then(|| reached.iter().enumerate().find(|(_, w)| **w != u64::MAX))
        .flatten()
        .map(|(w, word)| (w as u64 * 64 + u64::from((!word).trailing_zeros())) as u32)
        .filter(|&id| u64::from(id) < n);
    Ok(Reachability { reached: count, first_unreachable, passes })
}

/// Degree statistics of an index's graph (streams the graph file).
pub fn degree_stats(dir: &Path) -> Result<(IndexFiles, GraphHeader, DegreeStats), IndexError> {
    let files = IndexFiles::open(dir)?;
    let h = files.graph_header()?;
    let r = h.degree_max;
    let mut hist = vec![0u64; 11];
    let (mut min, mut max, mut sum) = (u32::MAX, 0u32, 0u64);
    scan_records(&files.path(GRAPH_FILE), &h, |_, d| {
        min = min.min(d);
        max = max.max(d);
        sum += d as u64;
        hist[((d as u64 * 10) / r as u64) as usize] += 1;
    })?;
    let mean = sum as f64 / h.count.max(1) as f64;
    Ok((files, h, DegreeStats { min, max, mean, histogram: hist }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::Metric;
    use crate::element::ElementType;
    use crate::format::FileIdent;
    use crate::format::graph::GraphWriter;

    /// Writes a graph of `n` nodes of dimension `dim` with `adj(i)` as
    /// node i's neighbours; returns its header.
    fn graph(
        path: &Path,
        n: u64,
        dim: u32,
        medoid: u32,
        adj: impl Fn(u32) -> Vec<u32>,
    ) -> GraphHeader {
        let h = GraphHeader {
            metric: Metric::L2,
            element: ElementType::F32,
            dim,
            degree_max: 8,
            count: n,
            medoid,
            pq_chunks: 1,
            list_size: 8,
            alpha: 1.2,
            passes: 1,
            seed: 1,
            ident: FileIdent { build_id: 5, generation: 0 },
            ip_norm_max: 0.0,
            placement: Default::default(),
        };
        let mut w = GraphWriter::create(path, &h).unwrap();
        for i in 0..n as u32 {
            w.append(&vec![i as f32; dim as usize], &adj(i)).unwrap();
        }
        w.finish().unwrap();
        h
    }

    // Reachability counts exactly the nodes a search can reach and names the
    // first one it cannot, for packed records read in coalesced windows and
    // for records spanning two sectors.
    #[test]
    fn reachability_counts_and_names_stranded_nodes() {
        let dir = tempfile::tempdir().unwrap();
        for (dim, n) in [(4u32, 5000u64), (1100, 300)] {
            let p = dir.path().join(format!("g{dim}"));
            // A ring 0 -> 1 -> ... over the even nodes plus long jumps; odd
            // nodes point into the ring but nothing points at them, except
            // node 7, which node 6 points at.
            let h = graph(&p, n, dim, 0, |i| {
                if i % 2 == 1 {
                    vec![(i + 1) % n as u32]
                } else {
                    let mut v = vec![(i + 2) % n as u32, ((i * 7 + 4) % n as u32) & !1];
                    if i == 6 {
                        v.push(7);
                    }
                    v.retain(|&x| x != i);
                    v.dedup();
                    v
                }
            });
            let r = reachability(&p, &h).unwrap();
            assert_eq!(r.reached, n / 2 + 1, "dim {dim}");
            assert_eq!(r.first_unreachable, Some(1), "dim {dim}");
            // Everything connected: all reached, nothing named.
            let h = graph(&p, n, dim, 3, |i| vec![(i + 1) % n as u32, (i + 5) % n as u32]);
            let r = reachability(&p, &h).unwrap();
            assert_eq!((r.reached, r.first_unreachable), (n, None), "dim {dim}");
            assert!(r.passes >= 2);
        }
    }
}

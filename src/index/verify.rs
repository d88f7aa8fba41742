//! `basalt verify` and `basalt inspect`: check every checksum and graph
//! invariant of an index, or describe it.
//!
//! Verification reads each file whole (streamed): the manifest's sizes and
//! XXH3 hashes, the graph header, every node record (checksum, degree <= R, ids < N,
//! no self loop), the PQ codebook and the codes. The first bad record is
//! named by node id, sector and byte offset.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::{CODES_FILE, GRAPH_FILE, IndexError, Manifest, PQ_FILE, read_manifest};
use crate::format::graph::{GraphHeader, read_graph_header};
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

/// Checks every checksum and graph invariant of the index at `dir`.
pub fn verify_index(dir: &Path) -> Result<VerifyReport, IndexError> {
    let m = read_manifest(dir)?;
    for f in &m.files {
        let p = dir.join(&f.name);
        let len = std::fs::metadata(&p).map_err(|e| IndexError::io(&p, "stat", e))?.len();
        if len != f.bytes {
            return Err(FormatError::corrupt(
                &p,
                len.min(f.bytes),
                format!("file is {len} bytes, the manifest says {}", f.bytes),
            )
            .into());
        }
    }
    let header = check_header(dir, &m)?;
    let (nodes, edges, sectors) = scan_records(&m.file(dir, GRAPH_FILE), &header, |_, _| {})?;
    let cb = crate::format::pq::read_codebook(&m.file(dir, PQ_FILE))?;
    if cb.dim() != super::pqspace::pq_dim(m.metric, m.dim as usize)
        || cb.chunks() != header.pq_chunks as usize
    {
        return Err(IndexError::Input(format!(
            "pq codebook is {} dims x {} chunks, the index is {} dims x {} chunks",
            cb.dim(),
            cb.chunks(),
            m.dim,
            header.pq_chunks
        )));
    }
    let codes = crate::format::codes::read_codes(&m.file(dir, CODES_FILE))?;
    if codes.n() != m.count || codes.chunks() != header.pq_chunks as usize {
        return Err(IndexError::Input(format!(
            "codes file holds {} x {} codes, the index has {} nodes x {} chunks",
            codes.n(),
            codes.chunks(),
            m.count,
            header.pq_chunks
        )));
    }
    // Whole-file checksums last: the record scan names a bad node precisely,
    // this catches anything else (padding, header).
    for f in &m.files {
        let p = dir.join(&f.name);
        let hash = file_xxh3(&p)?;
        if hash != f.xxh3 {
            return Err(FormatError::corrupt(
                &p,
                0,
                format!("file checksum (xxh3) {hash:#018x} != manifest {:#018x}", f.xxh3),
            )
            .into());
        }
    }
    Ok(VerifyReport { nodes, edges, sectors, files_checked: m.files.len() })
}

fn check_header(dir: &Path, m: &Manifest) -> Result<GraphHeader, IndexError> {
    let path = m.file(dir, GRAPH_FILE);
    let h = read_graph_header(&path)?;
    if h.count != m.count || h.dim != m.dim || h.metric != m.metric || h.element != m.element {
        return Err(FormatError::invalid(
            &path,
            format!(
                "header ({} x {} {} {}) disagrees with the manifest ({} x {} {} {})",
                h.count, h.dim, h.element, h.metric, m.count, m.dim, m.element, m.metric
            ),
        )
        .into());
    }
    Ok(h)
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
    let mut sector_index = 1u64;
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
                Err(fault) => {
                    return Err(FormatError::corrupt(
                        path,
                        l.record_offset(nid),
                        format!("node {nid} (sector {}): {fault}", l.sector_of(nid)),
                    )
                    .into());
                }
            }
        }
        id += in_this;
        sector_index += l.sectors_per_record as u64;
    }
    debug_assert_eq!(sector_index - 1, l.data_sectors);
    Ok((l.count, edges, l.data_sectors))
}

/// Degree statistics of an index's graph (streams the graph file).
pub fn degree_stats(dir: &Path) -> Result<(Manifest, GraphHeader, DegreeStats), IndexError> {
    let m = read_manifest(dir)?;
    let h = check_header(dir, &m)?;
    let r = h.degree_max;
    let mut hist = vec![0u64; 11];
    let (mut min, mut max, mut sum) = (u32::MAX, 0u32, 0u64);
    scan_records(&m.file(dir, GRAPH_FILE), &h, |_, d| {
        min = min.min(d);
        max = max.max(d);
        sum += d as u64;
        hist[((d as u64 * 10) / r as u64) as usize] += 1;
    })?;
    let mean = sum as f64 / m.count.max(1) as f64;
    Ok((m, h, DegreeStats { min, max, mean, histogram: hist }))
}

//! The graph file: a header sector, then node records packed into 4 KiB sectors.
//!
//! ```text
//! sector 0 (header, 4096 bytes, little-endian):
//!   0  magic "BASALTGR"            44 medoid u32
//!   8  format version u32 (2)      48 pq_chunks u32
//!  12  metric tag u8               52 build list size L u32
//!  13  element tag u8              56 alpha f32
//!  14  reserved u16 (0)            60 passes u32
//!  16  dim u32                     64 seed u64
//!  20  degree_max R u32            72 data sectors u64
//!  24  node count N u64            80 build id u64 (random, never 0)
//!  32  record_bytes u32            88 generation u64
//!  36  records_per_sector u32      96 ip_norm_max f32 (M of the MIPS reduction; 0 unless ip)
//!  40  sectors_per_record u32     100 placement u32 (0 row order, 1 packed)
//!                                 104..4092 zero
//!                               4092 CRC-32C of bytes 0..4092
//!
//! node record (record_bytes = dim*elem + 4 + 4R + 4):
//!   [ vector: dim elements | degree u32 | R x u32 neighbour ids (unused = 0) | CRC-32C u32 ]
//!   CRC-32C over (build id u64 ++ generation u64) ++ (node id u32) ++ vector
//!   ++ degree ++ ids (all LE), so a record read from the wrong place, or
//!   taken from another build or generation of the same shape, fails its
//!   check just like a flipped bit.
//! ```
//!
//! Placement: when a record fits a sector, `records_per_sector =
//! floor(4096 / record_bytes)` records are packed into each sector from
//! sector 1 and none straddles a boundary (`sectors_per_record = 1`);
//! otherwise each record starts on a sector boundary and spans
//! `sectors_per_record = ceil(record_bytes / 4096)` whole sectors
//! (`records_per_sector = 0`). All offsets are u64.
//!
//! Record i is node i's in both placements; they differ in which node is
//! node i. Row order: node i is row i of the input. Packed: the build
//! numbered the nodes so that a node's graph neighbours share its sector
//! (`index::placement`), and the generation's ids file maps each node back
//! to its row; a search uses every record of a sector it has read.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{FileIdent, FormatError, SECTOR_BYTES, crc32c, crc32c_append, le_f32, le_u32, le_u64};
use crate::distance::{DIM_MAX, Metric};
use crate::element::{Element, ElementType};

pub const GRAPH_MAGIC: &[u8; 8] = b"BASALTGR";
pub const GRAPH_VERSION: u32 = 2;
const HEADER_CRC_AT: usize = SECTOR_BYTES - 4;
const WRITE_BUFFER_BYTES: usize = 8 << 20;

/// Everything the header sector records.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphHeader {
    pub metric: Metric,
    pub element: ElementType,
    pub dim: u32,
    pub degree_max: u32,
    pub count: u64,
    pub medoid: u32,
    pub pq_chunks: u32,
    pub list_size: u32,
    pub alpha: f32,
    pub passes: u32,
    pub seed: u64,
    /// Build id and generation of the index this file belongs to.
    pub ident: FileIdent,
    /// Inner product only: M, the norm the MIPS-to-L2 reduction augments to
    /// (`sqrt(M^2 - |x|^2)`); 0 for l2 and cosine.
    pub ip_norm_max: f32,
    /// How the build numbered the nodes (which records share a sector).
    pub placement: Placement,
}

/// How the nodes of a graph file are numbered, and so which records share
/// a sector (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Node i is input row i.
    #[default]
    RowOrder,
    /// Nodes numbered so that graph neighbours share sectors; the ids file
    /// maps nodes to rows.
    Packed,
}

impl Placement {
    pub fn tag(self) -> u32 {
        match self {
            Placement::RowOrder => 0,
            Placement::Packed => 1,
        }
    }
    pub fn from_tag(t: u32) -> Option<Placement> {
        match t {
            0 => Some(Placement::RowOrder),
            1 => Some(Placement::Packed),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Placement::RowOrder => "row order",
            Placement::Packed => "packed",
        }
    }
}

/// Where records live, derived from the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub record_bytes: u32,
    /// 0 when a record spans several sectors.
    pub records_per_sector: u32,
    pub sectors_per_record: u32,
    pub data_sectors: u64,
    pub dim: u32,
    pub element_bytes: u32,
    pub degree_max: u32,
    pub count: u64,
    /// CRC-32C state every record checksum starts from (the file's identity).
    pub crc_seed: u32,
}

impl Layout {
    /// The layout of `count` records; record checksums start from `crc_seed`
    /// ([`FileIdent::record_crc_seed`]).
    pub fn new(
        dim: u32,
        element: ElementType,
        degree_max: u32,
        count: u64,
        crc_seed: u32,
    ) -> Layout {
        let element_bytes = element.size_bytes() as u32;
        let record_bytes = dim * element_bytes + 4 + 4 * degree_max + 4;
        let (rps, spr) = if record_bytes as usize <= SECTOR_BYTES {
            (SECTOR_BYTES as u32 / record_bytes, 1)
        } else {
            (0, (record_bytes as usize).div_ceil(SECTOR_BYTES) as u32)
        };
        let data_sectors = if rps > 0 { count.div_ceil(rps as u64) } else { count * spr as u64 };
        Layout {
            record_bytes,
            records_per_sector: rps,
            sectors_per_record: spr,
            data_sectors,
            dim,
            element_bytes,
            degree_max,
            count,
            crc_seed,
        }
    }

    /// The first sector holding node `id` (sector 0 is the header).
    #[inline]
    pub fn sector_of(&self, id: u32) -> u64 {
        if self.records_per_sector > 0 {
            1 + id as u64 / self.records_per_sector as u64
        } else {
            1 + id as u64 * self.sectors_per_record as u64
        }
    }

    /// Byte offset of node `id`'s record within the sectors read from `sector_of(id)`.
    #[inline]
    pub fn offset_in_sector(&self, id: u32) -> usize {
        if self.records_per_sector > 0 {
            (id % self.records_per_sector) as usize * self.record_bytes as usize
        } else {
            0
        }
    }

    /// Absolute byte offset of node `id`'s record in the file.
    pub fn record_offset(&self, id: u32) -> u64 {
        self.sector_of(id) * SECTOR_BYTES as u64 + self.offset_in_sector(id) as u64
    }

    pub fn file_bytes(&self) -> u64 {
        (1 + self.data_sectors) * SECTOR_BYTES as u64
    }

    fn vector_bytes(&self) -> usize {
        (self.dim * self.element_bytes) as usize
    }
}

impl GraphHeader {
    pub fn layout(&self) -> Layout {
        Layout::new(
            self.dim,
            self.element,
            self.degree_max,
            self.count,
            self.ident.record_crc_seed(),
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let l = self.layout();
        let mut b = vec![0u8; SECTOR_BYTES];
        b[0..8].copy_from_slice(GRAPH_MAGIC);
        b[8..12].copy_from_slice(&GRAPH_VERSION.to_le_bytes());
        b[12] = self.metric.tag();
        b[13] = self.element.tag();
        b[16..20].copy_from_slice(&self.dim.to_le_bytes());
        b[20..24].copy_from_slice(&self.degree_max.to_le_bytes());
        b[24..32].copy_from_slice(&self.count.to_le_bytes());
        b[32..36].copy_from_slice(&l.record_bytes.to_le_bytes());
        b[36..40].copy_from_slice(&l.records_per_sector.to_le_bytes());
        b[40..44].copy_from_slice(&l.sectors_per_record.to_le_bytes());
        b[44..48].copy_from_slice(&self.medoid.to_le_bytes());
        b[48..52].copy_from_slice(&self.pq_chunks.to_le_bytes());
        b[52..56].copy_from_slice(&self.list_size.to_le_bytes());
        b[56..60].copy_from_slice(&self.alpha.to_le_bytes());
        b[60..64].copy_from_slice(&self.passes.to_le_bytes());
        b[64..72].copy_from_slice(&self.seed.to_le_bytes());
        b[72..80].copy_from_slice(&l.data_sectors.to_le_bytes());
        b[80..96].copy_from_slice(&self.ident.encode());
        b[96..100].copy_from_slice(&self.ip_norm_max.to_le_bytes());
        b[100..104].copy_from_slice(&self.placement.tag().to_le_bytes());
        let crc = crc32c(&b[..HEADER_CRC_AT]);
        b[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates a header sector read from `path`.
    pub fn decode(path: &Path, b: &[u8]) -> Result<GraphHeader, FormatError> {
        let bad = |offset: u64, what: String| Err(FormatError::corrupt(path, offset, what));
        if b.len() < SECTOR_BYTES {
            return bad(0, format!("header is {} bytes, expected {SECTOR_BYTES}", b.len()));
        }
        if &b[0..8] != GRAPH_MAGIC {
            return Err(FormatError::invalid(path, "not a basalt graph file (bad magic)"));
        }
        let version = le_u32(b, 8);
        if version != GRAPH_VERSION {
            return Err(FormatError::Version {
                path: path.to_path_buf(),
                found: version,
                supported: GRAPH_VERSION,
            });
        }
        let stored = le_u32(b, HEADER_CRC_AT);
        let crc = crc32c(&b[..HEADER_CRC_AT]);
        if stored != crc {
            return bad(
                HEADER_CRC_AT as u64,
                format!("header checksum {stored:#010x} != computed {crc:#010x}"),
            );
        }
        let Some(metric) = Metric::from_tag(b[12]) else {
            return bad(12, format!("unknown metric tag {}", b[12]));
        };
        let Some(element) = ElementType::from_tag(b[13]) else {
            return bad(13, format!("unknown element tag {}", b[13]));
        };
        let h = GraphHeader {
            metric,
            element,
            dim: le_u32(b, 16),
            degree_max: le_u32(b, 20),
            count: le_u64(b, 24),
            medoid: le_u32(b, 44),
            pq_chunks: le_u32(b, 48),
            list_size: le_u32(b, 52),
            alpha: le_f32(b, 56),
            passes: le_u32(b, 60),
            seed: le_u64(b, 64),
            ident: FileIdent::decode(b, 80),
            ip_norm_max: le_f32(b, 96),
            placement: match Placement::from_tag(le_u32(b, 100)) {
                Some(p) => p,
                None => return bad(100, format!("unknown placement tag {}", le_u32(b, 100))),
            },
        };
        if b[14..16] != [0, 0] {
            return bad(14, "reserved bytes are not zero".into());
        }
        if let Some(at) = b[104..HEADER_CRC_AT].iter().position(|&x| x != 0) {
            return bad(104 + at as u64, "reserved bytes are not zero".into());
        }
        if h.ident.build_id == 0 {
            return bad(80, "build id is 0".into());
        }
        let norm_ok = if metric == Metric::InnerProduct {
            h.ip_norm_max.is_finite() && h.ip_norm_max >= 0.0
        } else {
            h.ip_norm_max == 0.0
        };
        if !norm_ok {
            return bad(
                96,
                format!("ip_norm_max {} is invalid for metric {metric}", h.ip_norm_max),
            );
        }
        if h.pq_chunks == 0 || h.pq_chunks > h.dim {
            return bad(48, format!("pq_chunks {} outside 1..=dim {}", h.pq_chunks, h.dim));
        }
        if !(h.alpha.is_finite() && h.alpha >= 1.0) {
            return bad(56, format!("alpha {} out of range", h.alpha));
        }
        if h.dim == 0 || h.dim as usize > DIM_MAX {
            return bad(16, format!("dimension {} outside 1..={DIM_MAX}", h.dim));
        }
        if h.degree_max == 0 || h.degree_max as usize > crate::vamana::DEGREE_MAX {
            return bad(20, format!("degree bound {} out of range", h.degree_max));
        }
        if h.count == 0 || h.count > super::NODES_MAX {
            return bad(24, format!("node count {} out of range", h.count));
        }
        if h.medoid as u64 >= h.count {
            return bad(44, format!("medoid {} >= node count {}", h.medoid, h.count));
        }
        let l = h.layout();
        let fields = [
            (32, le_u32(b, 32) as u64, l.record_bytes as u64, "record_bytes"),
            (36, le_u32(b, 36) as u64, l.records_per_sector as u64, "records_per_sector"),
            (40, le_u32(b, 40) as u64, l.sectors_per_record as u64, "sectors_per_record"),
            (72, le_u64(b, 72), l.data_sectors, "data_sectors"),
        ];
        for (at, found, want, name) in fields {
            if found != want {
                return bad(at, format!("{name} is {found}, the layout implies {want}"));
            }
        }
        Ok(h)
    }
}

/// A decoded node record (borrowing the sector buffer).
pub struct RecordView<'a> {
    pub vector_bytes: &'a [u8],
    pub neighbors_bytes: &'a [u8],
}

impl RecordView<'_> {
    pub fn degree(&self) -> usize {
        self.neighbors_bytes.len() / 4
    }
    #[inline]
    pub fn neighbor(&self, i: usize) -> u32 {
        le_u32(self.neighbors_bytes, 4 * i)
    }
    pub fn neighbors(&self) -> impl Iterator<Item = u32> + '_ {
        self.neighbors_bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }
    /// Copies the vector into `out` as elements.
    pub fn vector_into<T: Element>(&self, out: &mut [T]) {
        T::copy_from_bytes(self.vector_bytes, out);
    }
}

/// Why a record failed its checks (the caller adds file and offset).
#[derive(Debug, PartialEq, Eq)]
pub enum RecordFault {
    /// The record is corrupt, misplaced, or from another build or generation.
    Checksum {
        stored: u32,
        computed: u32,
    },
    Degree {
        degree: u32,
        max: u32,
    },
    NeighborOutOfRange {
        index: usize,
        id: u32,
    },
    SelfLoop,
}

impl std::fmt::Display for RecordFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordFault::Checksum { stored, computed } => {
                write!(
                    f,
                    "record checksum {stored:#010x} != computed {computed:#010x} \
                     (corrupt, misplaced, or from another build or generation)"
                )
            }
            RecordFault::Degree { degree, max } => write!(f, "degree {degree} exceeds R = {max}"),
            RecordFault::NeighborOutOfRange { index, id } => {
                write!(f, "neighbour #{index} is {id}, not a node id")
            }
            RecordFault::SelfLoop => write!(f, "record lists itself as a neighbour"),
        }
    }
}

fn record_crc(seed: u32, id: u32, body: &[u8]) -> u32 {
    crc32c_append(crc32c_append(seed, &id.to_le_bytes()), body)
}

impl Layout {
    /// Decodes node `id`'s record from `bytes` (exactly `record_bytes` long),
    /// verifying the checksum and, when `check_graph`, the graph invariants.
    pub fn decode_record<'a>(
        &self,
        id: u32,
        bytes: &'a [u8],
        check_graph: bool,
    ) -> Result<RecordView<'a>, RecordFault> {
        debug_assert_eq!(bytes.len(), self.record_bytes as usize);
        let vb = self.vector_bytes();
        let body_end = self.record_bytes as usize - 4;
        let stored = le_u32(bytes, body_end);
        let computed = record_crc(self.crc_seed, id, &bytes[..body_end]);
        if stored != computed {
            return Err(RecordFault::Checksum { stored, computed });
        }
        let degree = le_u32(bytes, vb);
        if degree > self.degree_max {
            return Err(RecordFault::Degree { degree, max: self.degree_max });
        }
        let view = RecordView {
            vector_bytes: &bytes[..vb],
            neighbors_bytes: &bytes[vb + 4..vb + 4 + 4 * degree as usize],
        };
        if check_graph {
            for (index, n) in view.neighbors().enumerate() {
                if n as u64 >= self.count {
                    return Err(RecordFault::NeighborOutOfRange { index, id: n });
                }
                if n == id {
                    return Err(RecordFault::SelfLoop);
                }
            }
        }
        Ok(view)
    }

    /// Encodes node `id`'s record into `out` (exactly `record_bytes` long).
    pub fn encode_record<T: Element>(
        &self,
        id: u32,
        vector: &[T],
        neighbors: &[u32],
        out: &mut [u8],
    ) {
        assert_eq!(vector.len(), self.dim as usize, "vector length must equal dim");
        assert!(neighbors.len() <= self.degree_max as usize, "degree must be <= R");
        assert_eq!(out.len(), self.record_bytes as usize, "record buffer size");
        let vb = self.vector_bytes();
        out[..vb].copy_from_slice(T::as_bytes(vector));
        out[vb..vb + 4].copy_from_slice(&(neighbors.len() as u32).to_le_bytes());
        let ids = &mut out[vb + 4..vb + 4 + 4 * self.degree_max as usize];
        ids.fill(0);
        for (c, n) in ids.chunks_exact_mut(4).zip(neighbors) {
            c.copy_from_slice(&n.to_le_bytes());
        }
        let body_end = self.record_bytes as usize - 4;
        let crc = record_crc(self.crc_seed, id, &out[..body_end]);
        out[body_end..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Writes a graph file sequentially: header, then records in id order.
pub struct GraphWriter {
    path: PathBuf,
    out: BufWriter<File>,
    layout: Layout,
    sector: Vec<u8>,
    used: usize,
    next_id: u64,
    crc: u32,
    record: Vec<u8>,
}

impl GraphWriter {
    pub fn create(path: &Path, header: &GraphHeader) -> Result<GraphWriter, FormatError> {
        if header.count == 0 || header.count > super::NODES_MAX {
            return Err(FormatError::invalid(
                path,
                format!("node count {} outside 1..={} (NODES_MAX)", header.count, super::NODES_MAX),
            ));
        }
        let file = File::create(path).map_err(|e| FormatError::io(path, "create", e))?;
        let mut w = GraphWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            layout: header.layout(),
            sector: vec![0; SECTOR_BYTES],
            used: 0,
            next_id: 0,
            crc: 0,
            record: vec![0; header.layout().record_bytes as usize],
        };
        w.write(&header.encode())?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> Result<(), FormatError> {
        self.crc = crc32c_append(self.crc, b);
        self.out.write_all(b).map_err(|e| FormatError::io(&self.path, "write", e))
    }

    fn flush_sector(&mut self) -> Result<(), FormatError> {
        let s = std::mem::replace(&mut self.sector, vec![0; SECTOR_BYTES]);
        self.write(&s)?;
        self.used = 0;
        Ok(())
    }

    /// Appends the next node's record (ids must come in order from 0).
    pub fn append<T: Element>(
        &mut self,
        vector: &[T],
        neighbors: &[u32],
    ) -> Result<(), FormatError> {
        assert!(self.next_id < self.layout.count, "more records than the header's count");
        let id = self.next_id as u32;
        let mut rec = std::mem::take(&mut self.record);
        self.layout.encode_record(id, vector, neighbors, &mut rec);
        if self.layout.records_per_sector > 0 {
            let rb = rec.len();
            if self.used + rb > SECTOR_BYTES {
                self.flush_sector()?;
            }
            self.sector[self.used..self.used + rb].copy_from_slice(&rec);
            self.used += rb;
            if (self.next_id + 1).is_multiple_of(u64::from(self.layout.records_per_sector)) {
                self.flush_sector()?;
            }
        } else {
            let total = self.layout.sectors_per_record as usize * SECTOR_BYTES;
            let mut padded = vec![0u8; total];
            padded[..rec.len()].copy_from_slice(&rec);
            self.write(&padded)?;
        }
        self.record = rec;
        self.next_id += 1;
        Ok(())
    }

    /// Pads the last sector, flushes and fsyncs. Returns (bytes, CRC-32C of the file).
    pub fn finish(mut self) -> Result<(u64, u32), FormatError> {
        assert_eq!(self.next_id, self.layout.count, "every node must be written");
        if self.used > 0 {
            self.flush_sector()?;
        }
        let file = self
            .out
            .into_inner()
            .map_err(|e| FormatError::io(&self.path, "flush", e.into_error()))?;
        file.sync_all().map_err(|e| FormatError::io(&self.path, "fsync", e))?;
        let bytes = file.metadata().map_err(|e| FormatError::io(&self.path, "stat", e))?.len();
        assert_eq!(bytes, self.layout.file_bytes(), "graph file size must match its layout");
        Ok((bytes, self.crc))
    }
}

/// Reads and validates the header of the graph file at `path`, and checks
/// the file size against it.
pub fn read_graph_header(path: &Path) -> Result<GraphHeader, FormatError> {
    let mut f = File::open(path).map_err(|e| FormatError::io(path, "open", e))?;
    let len = f.metadata().map_err(|e| FormatError::io(path, "stat", e))?.len();
    let mut b = vec![0u8; SECTOR_BYTES];
    if len < SECTOR_BYTES as u64 {
        return Err(FormatError::corrupt(path, len, "file shorter than its header sector"));
    }
    f.read_exact(&mut b).map_err(|e| FormatError::io(path, "read", e))?;
    let h = GraphHeader::decode(path, &b)?;
    let want = h.layout().file_bytes();
    if len != want {
        return Err(FormatError::corrupt(
            path,
            len.min(want),
            format!("file is {len} bytes, the header implies {want}"),
        ));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dim: u32, element: ElementType, r: u32, n: u64) -> GraphHeader {
        GraphHeader {
            metric: Metric::L2,
            element,
            dim,
            degree_max: r,
            count: n,
            medoid: 1,
            pq_chunks: 4,
            list_size: 50,
            alpha: 1.2,
            passes: 2,
            seed: 9,
            ident: FileIdent { build_id: 0xfeed, generation: 3 },
            ip_norm_max: 0.0,
            placement: Default::default(),
        }
    }

    /// Records never straddle a sector unless larger than one, and then start on a boundary.
    #[test]
    fn placement_rules() {
        let l = Layout::new(128, ElementType::F32, 64, 1000, 0);
        assert_eq!(l.record_bytes, 512 + 4 + 256 + 4);
        assert_eq!(l.records_per_sector, 5);
        for id in 0..1000u32 {
            let off = l.offset_in_sector(id) + l.record_bytes as usize;
            assert!(off <= SECTOR_BYTES);
        }
        let big = Layout::new(1536, ElementType::F32, 64, 10, 0);
        assert_eq!((big.records_per_sector, big.sectors_per_record), (0, 2));
        assert_eq!(big.sector_of(3), 7);
        assert_eq!(big.record_offset(3) % SECTOR_BYTES as u64, 0);
    }

    /// Every record written reads back equal, in packed and multi-sector layouts.
    #[test]
    fn write_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for (dim, n) in [(7u32, 50u64), (1100, 5)] {
            let h = header(dim, ElementType::F32, 6, n);
            let p = dir.path().join(format!("g{dim}"));
            let mut w = GraphWriter::create(&p, &h).unwrap();
            let vec_of =
                |i: u64| (0..dim).map(|j| (i * 1000 + j as u64) as f32).collect::<Vec<f32>>();
            let nb_of = |i: u64| {
                ((i + 1) % n..((i + 1) % n + (i % 7).min(6)))
                    .map(|x| (x % n) as u32)
                    .filter(|&x| x as u64 != i)
                    .collect::<Vec<u32>>()
            };
            for i in 0..n {
                w.append(&vec_of(i), &nb_of(i)).unwrap();
            }
            let (bytes, _) = w.finish().unwrap();
            let got = read_graph_header(&p).unwrap();
            assert_eq!(got, h);
            let file = std::fs::read(&p).unwrap();
            assert_eq!(bytes as usize, file.len());
            let l = got.layout();
            for i in 0..n as u32 {
                let at = l.record_offset(i) as usize;
                let v = l.decode_record(i, &file[at..at + l.record_bytes as usize], true).unwrap();
                let mut out = vec![0f32; dim as usize];
                v.vector_into(&mut out);
                assert_eq!(out, vec_of(i as u64));
                assert_eq!(v.neighbors().collect::<Vec<_>>(), nb_of(i as u64));
            }
        }
    }

    /// A flipped byte anywhere in the header sector is an error, never a panic.
    #[test]
    fn header_flip_detected() {
        let h = header(16, ElementType::U8, 8, 100);
        let b = h.encode();
        for i in 0..SECTOR_BYTES {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(GraphHeader::decode(Path::new("g"), &c).is_err(), "byte {i}");
        }
    }

    /// A record read as another node's fails its checksum, and so does a
    /// record of the same node from another build or generation.
    #[test]
    fn misplaced_or_foreign_record_detected() {
        let ident = FileIdent { build_id: 77, generation: 1 };
        let l = Layout::new(4, ElementType::F32, 4, 10, ident.record_crc_seed());
        let mut rec = vec![0u8; l.record_bytes as usize];
        l.encode_record(3, &[1.0f32, 2.0, 3.0, 4.0], &[1, 2], &mut rec);
        assert!(l.decode_record(3, &rec, true).is_ok());
        assert!(matches!(l.decode_record(4, &rec, true), Err(RecordFault::Checksum { .. })));
        for other in
            [FileIdent { build_id: 78, generation: 1 }, FileIdent { build_id: 77, generation: 2 }]
        {
            let o = Layout::new(4, ElementType::F32, 4, 10, other.record_crc_seed());
            assert!(
                matches!(o.decode_record(3, &rec, true), Err(RecordFault::Checksum { .. })),
                "{other}"
            );
        }
    }
}

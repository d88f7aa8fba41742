//! The replication connection's frames.
//!
//! ```text
//! frame: len u32 | crc32c u32 | kind u8 | epoch u64 | lsn u64 | payload (len - 17 bytes)
//!        crc32c over (kind ++ epoch ++ lsn ++ payload)
//! ```
//!
//! Every frame carries the sender's epoch and an LSN (the first record's for
//! WAL frames, 0 where none applies). Control frames carry JSON; WAL and
//! file-chunk frames are binary. A frame that fails its checksum, is longer
//! than [`FRAME_BYTES_MAX`] or has an unknown kind ends the connection.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::format::{crc32c, crc32c_append};
use crate::wal::{Lsn, Record, RecordKind};

/// Largest frame: a WAL record's largest body plus room for its header.
pub const FRAME_BYTES_MAX: usize = crate::wal::RECORD_BODY_MAX + (1 << 20);
/// Bytes of the fixed part after the length and checksum.
const HEAD: usize = 17;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Standby -> primary, first: [`Hello`].
    Hello = 1,
    /// Primary -> standby: [`Welcome`].
    Welcome = 2,
    /// Either way, then the connection closes: [`Refusal`].
    Refuse = 3,
    /// Primary -> standby: the collections now ([`Catalog`]).
    Catalog = 4,
    /// Primary -> standby: a base copy starts ([`BaseBegin`]).
    BaseBegin = 5,
    /// Primary -> standby: bytes of one file of the base copy.
    FileChunk = 6,
    /// Primary -> standby: every file sent ([`BaseEnd`]).
    BaseEnd = 7,
    /// Primary -> standby: WAL records of one collection.
    Wal = 8,
    /// Primary -> standby, every second: [`Keepalive`].
    Keepalive = 9,
    /// Standby -> primary: [`Feedback`].
    Feedback = 10,
    /// Standby -> primary: a base copy is in place ([`BaseDone`]).
    BaseDone = 11,
    /// A promoted node -> the old primary: [`Fence`]; answered by Welcome
    /// (fenced) or Refuse.
    Fence = 12,
}

impl Kind {
    fn from_tag(t: u8) -> Option<Kind> {
        use Kind::*;
        Some(match t {
            1 => Hello,
            2 => Welcome,
            3 => Refuse,
            4 => Catalog,
            5 => BaseBegin,
            6 => FileChunk,
            7 => BaseEnd,
            8 => Wal,
            9 => Keepalive,
            10 => Feedback,
            11 => BaseDone,
            12 => Fence,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub struct Frame {
    pub kind: Kind,
    pub epoch: u64,
    pub lsn: Lsn,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Bad(String),
}

impl FrameError {
    /// A read timeout (no frame within the socket's timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, FrameError::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    }
}

/// Encodes one frame.
pub fn encode(kind: Kind, epoch: u64, lsn: Lsn, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + HEAD + payload.len());
    out.extend_from_slice(&((HEAD + payload.len()) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind as u8);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c_append(crc32c(&out[8..8 + HEAD]), payload);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

pub fn write(
    w: &mut impl Write,
    kind: Kind,
    epoch: u64,
    lsn: Lsn,
    payload: &[u8],
) -> Result<(), FrameError> {
    w.write_all(&encode(kind, epoch, lsn, payload))?;
    Ok(())
}

pub fn write_json<T: Serialize>(
    w: &mut impl Write,
    kind: Kind,
    epoch: u64,
    v: &T,
) -> Result<(), FrameError> {
    let b = serde_json::to_vec(v).map_err(|e| FrameError::Bad(e.to_string()))?;
    write(w, kind, epoch, 0, &b)
}

/// Reads one frame (checksum and size checked).
pub fn read(r: &mut impl Read) -> Result<Frame, FrameError> {
    let mut h = [0u8; 8];
    r.read_exact(&mut h)?;
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
    if !(HEAD..=FRAME_BYTES_MAX).contains(&len) {
        return Err(FrameError::Bad(format!(
            "frame length {len} outside {HEAD}..={FRAME_BYTES_MAX}"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let stored = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    let computed = crc32c(&body);
    if stored != computed {
        return Err(FrameError::Bad(format!(
            "frame checksum {stored:#010x} != computed {computed:#010x}"
        )));
    }
    let kind = Kind::from_tag(body[0])
        .ok_or_else(|| FrameError::Bad(format!("unknown frame kind {}", body[0])))?;
    let epoch = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
    let lsn = u64::from_le_bytes(body[9..17].try_into().expect("8 bytes"));
    body.drain(..HEAD);
    Ok(Frame { kind, epoch, lsn, payload: body })
}

impl Frame {
    pub fn json<T: for<'de> Deserialize<'de>>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| FrameError::Bad(format!("{:?} frame: {e}", self.kind)))
    }
}

/// A collection as the primary lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CollectionId {
    pub name: String,
    pub uid: u64,
}

/// What a standby holds of a collection when it says hello.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Position {
    pub name: String,
    pub uid: u64,
    /// Last durable, applied LSN.
    pub lsn: Lsn,
}

/// A base copy the standby had started and can resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Resume {
    pub name: String,
    pub copy_id: u64,
    /// Files received whole and checked.
    pub files_done: usize,
    /// Bytes of the next file received.
    pub offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub secret: String,
    pub node: String,
    pub positions: Vec<Position>,
    pub resume: Vec<Resume>,
}

/// One promotion: the epoch it began and each collection's last LSN then.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Switch {
    pub epoch: u64,
    pub unix_ms: u64,
    pub lsns: std::collections::BTreeMap<String, Lsn>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Welcome {
    /// The primary's HTTP address (a standby names it in write refusals).
    pub http: String,
    pub history: Vec<Switch>,
    pub collections: Vec<CollectionId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Refusal {
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Catalog {
    pub collections: Vec<CollectionId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path in the collection directory (plain components).
    pub path: String,
    pub size: u64,
    pub xxh3: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaseBegin {
    pub name: String,
    pub uid: u64,
    pub copy_id: u64,
    pub files: Vec<FileEntry>,
    /// Where sending starts (a resumed copy skips what the standby has).
    pub files_done: usize,
    pub offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BaseEnd {
    pub name: String,
    pub copy_id: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BaseDone {
    pub name: String,
    pub uid: u64,
    pub lsn: Lsn,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Keepalive {
    pub unix_ms: u64,
    pub last_lsns: std::collections::BTreeMap<String, Lsn>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lsns {
    pub received: Lsn,
    pub flushed: Lsn,
    pub applied: Lsn,
}

/// One collection's positions on the standby.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Reported {
    /// The uid of the standby's copy (a position of an older collection of
    /// the same name is not a position of this one).
    pub uid: u64,
    #[serde(flatten)]
    pub lsns: Lsns,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Feedback {
    pub positions: std::collections::BTreeMap<String, Reported>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Fence {
    pub secret: String,
}

/// A file chunk: file index u32 | offset u64 | bytes.
pub fn encode_chunk(file: u32, offset: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + bytes.len());
    out.extend_from_slice(&file.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

pub fn decode_chunk(p: &[u8]) -> Result<(u32, u64, &[u8]), FrameError> {
    if p.len() < 12 {
        return Err(FrameError::Bad("file chunk shorter than its header".into()));
    }
    let f = u32::from_le_bytes(p[0..4].try_into().expect("4 bytes"));
    let o = u64::from_le_bytes(p[4..12].try_into().expect("8 bytes"));
    Ok((f, o, &p[12..]))
}

/// WAL records of one collection: name len u16 | name | count u32 |
/// (kind u8 | body len u32 | body)*; LSNs follow the frame's, one apart.
pub fn encode_wal(name: &str, records: &[Record]) -> Vec<u8> {
    let n: usize = records.iter().map(|r| 5 + r.body.len()).sum();
    let mut out = Vec::with_capacity(6 + name.len() + n);
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.push(r.kind as u8);
        out.extend_from_slice(&(r.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.body);
    }
    out
}

pub fn decode_wal(first: Lsn, p: &[u8]) -> Result<(String, Vec<Record>), FrameError> {
    let bad = |w: &str| FrameError::Bad(format!("WAL frame: {w}"));
    let take = |at: &mut usize, n: usize| -> Result<&[u8], FrameError> {
        let s = p.get(*at..*at + n).ok_or_else(|| bad("cut short"))?;
        *at += n;
        Ok(s)
    };
    let mut at = 0;
    let nl = u16::from_le_bytes(take(&mut at, 2)?.try_into().expect("2 bytes")) as usize;
    let name =
        std::str::from_utf8(take(&mut at, nl)?).map_err(|_| bad("name not UTF-8"))?.to_string();
    let count = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes")) as usize;
    let mut recs = Vec::with_capacity(count.min(1 << 16));
    for i in 0..count {
        let tag = take(&mut at, 1)?[0];
        let kind = RecordKind::from_tag(tag).ok_or_else(|| bad(&format!("record kind {tag}")))?;
        let len = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes")) as usize;
        let body = take(&mut at, len)?.to_vec();
        recs.push(Record { lsn: first + i as u64, kind, body });
    }
    if at != p.len() {
        return Err(bad("bytes after the last record"));
    }
    Ok((name, recs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_flipped_bit_is_refused() {
        let recs = vec![
            Record { lsn: 7, kind: RecordKind::UpsertBatch, body: vec![1, 2, 3] },
            Record { lsn: 8, kind: RecordKind::DeleteBatch, body: vec![] },
        ];
        let f = encode(Kind::Wal, 3, 7, &encode_wal("c1", &recs));
        let got = read(&mut &f[..]).expect("reads");
        assert_eq!((got.kind, got.epoch, got.lsn), (Kind::Wal, 3, 7));
        let (name, back) = decode_wal(got.lsn, &got.payload).expect("decodes");
        assert_eq!((name.as_str(), back), ("c1", recs));
        for bit in 0..f.len() * 8 {
            let mut g = f.clone();
            g[bit / 8] ^= 1 << (bit % 8);
            assert!(read(&mut &g[..]).is_err(), "bit {bit} flipped is refused");
        }
    }
}

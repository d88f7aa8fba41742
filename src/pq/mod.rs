//! Product quantization: codebook training, encoding, decoding and the
//! per-query lookup tables that score compressed vectors.
//!
//! A [`Codebook`] cuts a vector of `dim` values into M chunks (M = bytes per
//! code, `pq-bytes`); when M does not divide `dim`, the first `dim % M`
//! chunks are one value wider. The data mean (the *centroid*) is subtracted
//! first, then each chunk is replaced by the index of the nearest of
//! [`PQ_CENTROIDS`] centres trained for that chunk by k-means ([`kmeans`]).
//! A code is M bytes; decoding adds the centroid back.
//!
//! Search code scores codes through a [`LookupTable`] built once per query:
//! M rows of 256 partial distances, so scoring a code is M table loads. The
//! crate's convention holds: smaller is nearer. For `l2` a code scores the
//! squared L2 distance from the query to its reconstruction; for `ip` and
//! `cosine` the negated inner product with the reconstruction (cosine indexes
//! store normalised vectors and the caller normalises the query, so there
//! cosine ranks as inner product does).
//!
//! Training is deterministic for a seed whatever the thread count: each
//! chunk's RNG is derived from (seed, chunk index). Bad parameters or data are
//! a [`PqError`]; mismatched slice lengths are caller bugs and panic.

pub mod kmeans;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::distance::{DIM_MAX, Metric};
use crate::element::Element;
use kmeans::CenterTable;

/// Centres per chunk: a code byte indexes one of them.
pub const PQ_CENTROIDS: usize = 256;
const _: () =
    assert!(PQ_CENTROIDS == u8::MAX as usize + 1, "a code byte must address every centre");

/// Default number of training rows.
pub const PQ_SAMPLE_DEFAULT: usize = 256_000;
/// Largest `sample_max` accepted: bounds the training sample held in RAM.
pub const PQ_SAMPLE_ROWS_MAX: usize = 1 << 22;
/// Default cap on Lloyd iterations per chunk.
pub const PQ_ITERS_DEFAULT: usize = 12;
/// Largest `iters_max` accepted.
pub const PQ_ITERS_MAX: usize = 1000;

/// Rows per rayon task in [`Codebook::encode_batch`].
const ENCODE_BLOCK_ROWS: usize = 256;
/// The RNG stream of the training subsample; chunk streams are the chunk
/// indices, all below `DIM_MAX`, so the streams never collide.
const SUBSAMPLE_STREAM: u64 = u64::MAX;

/// Errors training or assembling a codebook.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PqError {
    #[error("dimension {dim} is outside 1..={DIM_MAX}")]
    Dimension { dim: usize },
    #[error("pq-bytes must be at least 1")]
    NoChunks,
    #[error("pq-bytes {chunks} exceeds dimension {dim}")]
    ChunksExceedDimension { chunks: usize, dim: usize },
    #[error("PQ sample_max {sample_max} is outside 1..={PQ_SAMPLE_ROWS_MAX} (PQ_SAMPLE_ROWS_MAX)")]
    SampleMax { sample_max: usize },
    #[error("PQ iters_max {iters_max} is outside 1..={PQ_ITERS_MAX} (PQ_ITERS_MAX)")]
    Iterations { iters_max: usize },
    #[error("the PQ training sample is empty")]
    EmptySample,
    #[error(
        "the PQ training sample has {len} values, not a whole number of rows of dimension {dim}"
    )]
    RaggedSample { len: usize, dim: usize },
    #[error(
        "the PQ training sample has a non-finite value {value} at row {row}, dimension {column}"
    )]
    NonFinite { row: usize, column: usize, value: f32 },
    #[error("invalid codebook: {what}")]
    InvalidCodebook { what: String },
}

/// How to train a codebook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PqParams {
    /// Chunks M, which is also the bytes per code.
    pub chunks: usize,
    /// Most training rows used; a larger sample is subsampled.
    pub sample_max: usize,
    /// Most Lloyd iterations per chunk.
    pub iters_max: usize,
    pub seed: u64,
}

impl PqParams {
    /// Parameters with the default sample size and iteration cap.
    pub fn new(chunks: usize, seed: u64) -> PqParams {
        PqParams { chunks, sample_max: PQ_SAMPLE_DEFAULT, iters_max: PQ_ITERS_DEFAULT, seed }
    }

    /// Checks the parameters against a dimension.
    pub fn validate(&self, dim: usize) -> Result<(), PqError> {
        if dim == 0 || dim > DIM_MAX {
            return Err(PqError::Dimension { dim });
        }
        if self.chunks == 0 {
            return Err(PqError::NoChunks);
        }
        if self.chunks > dim {
            return Err(PqError::ChunksExceedDimension { chunks: self.chunks, dim });
        }
        if !(1..=PQ_SAMPLE_ROWS_MAX).contains(&self.sample_max) {
            return Err(PqError::SampleMax { sample_max: self.sample_max });
        }
        if !(1..=PQ_ITERS_MAX).contains(&self.iters_max) {
            return Err(PqError::Iterations { iters_max: self.iters_max });
        }
        Ok(())
    }
}

/// The even split of `dim` values into `chunks` chunks: `chunks + 1` offsets,
/// the first `dim % chunks` chunks one value wider than the rest. Panics
/// unless `1 <= chunks <= dim <= DIM_MAX` (validated by the callers).
pub fn chunk_offsets(dim: usize, chunks: usize) -> Vec<u32> {
    assert!((1..=dim).contains(&chunks) && dim <= DIM_MAX, "chunks {chunks} for dimension {dim}");
    let (base, extra) = (dim / chunks, dim % chunks);
    let mut offsets = Vec::with_capacity(chunks + 1);
    let mut at = 0;
    offsets.push(0);
    for m in 0..chunks {
        at += base + usize::from(m < extra);
        offsets.push(at as u32);
    }
    offsets
}

/// A trained PQ codebook. Immutable; cheap to share across threads.
#[derive(Clone, Debug, PartialEq)]
pub struct Codebook {
    dim: usize,
    /// M + 1 offsets: chunk m covers dimensions `[off[m], off[m+1])`.
    chunk_offsets: Vec<u32>,
    /// The data mean, subtracted before encoding.
    centroid: Vec<f32>,
    /// For each chunk m, 256 centres of its width, concatenated; chunk m's
    /// centres start at `256 * off[m]`.
    centers: Vec<f32>,
    /// Per chunk, the centres laid out for the nearest-centre search.
    tables: Vec<CenterTable>,
}

impl Codebook {
    /// Trains a codebook on `sample` (row-major, `dim` values per row).
    pub fn train(sample: &[f32], dim: usize, params: &PqParams) -> Result<Codebook, PqError> {
        params.validate(dim)?;
        if sample.is_empty() {
            return Err(PqError::EmptySample);
        }
        if !sample.len().is_multiple_of(dim) {
            return Err(PqError::RaggedSample { len: sample.len(), dim });
        }
        if let Some(at) = sample.iter().position(|v| !v.is_finite()) {
            return Err(PqError::NonFinite { row: at / dim, column: at % dim, value: sample[at] });
        }
        let sample = subsample(sample, dim, params);
        let rows = sample.len() / dim;
        let centroid = mean(&sample, dim);
        let offsets = chunk_offsets(dim, params.chunks);

        let per_chunk: Vec<Vec<f32>> = (0..params.chunks)
            .into_par_iter()
            .map(|m| {
                let (lo, hi) = (offsets[m] as usize, offsets[m + 1] as usize);
                let mut points = Vec::with_capacity(rows * (hi - lo));
                for row in sample.chunks_exact(dim) {
                    points.extend(row[lo..hi].iter().zip(&centroid[lo..hi]).map(|(v, c)| v - c));
                }
                let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
                rng.set_stream(m as u64);
                kmeans::kmeans(&points, hi - lo, PQ_CENTROIDS, params.iters_max, &mut rng).centers
            })
            .collect();
        Codebook::from_parts(dim, offsets, centroid, per_chunk.concat())
    }

    /// Assembles a codebook from its stored parts (as the codebook file holds
    /// them), checking every invariant.
    pub fn from_parts(
        dim: usize,
        chunk_offsets: Vec<u32>,
        centroid: Vec<f32>,
        centers: Vec<f32>,
    ) -> Result<Codebook, PqError> {
        let invalid = |what: String| Err(PqError::InvalidCodebook { what });
        if dim == 0 || dim > DIM_MAX {
            return Err(PqError::Dimension { dim });
        }
        let chunks = chunk_offsets.len().saturating_sub(1);
        if chunks == 0 || chunks > dim {
            return invalid(format!("{chunks} chunks for dimension {dim}"));
        }
        if chunk_offsets[0] != 0 || chunk_offsets[chunks] as usize != dim {
            return invalid(format!("chunk offsets must run from 0 to {dim}: {chunk_offsets:?}"));
        }
        if let Some(m) = chunk_offsets.windows(2).position(|w| w[0] >= w[1]) {
            return invalid(format!("chunk {m} is empty or reversed: offsets {chunk_offsets:?}"));
        }
        if centroid.len() != dim {
            return invalid(format!("centroid has {} values, dimension is {dim}", centroid.len()));
        }
        if centers.len() != PQ_CENTROIDS * dim {
            return invalid(format!(
                "{} centre values, expected {}",
                centers.len(),
                PQ_CENTROIDS * dim
            ));
        }
        if centroid.iter().chain(&centers).any(|v| !v.is_finite()) {
            return invalid("a centroid or centre value is not finite".to_string());
        }
        let tables = chunk_offsets
            .windows(2)
            .map(|w| {
                let (lo, hi) = (w[0] as usize, w[1] as usize);
                CenterTable::new(&centers[PQ_CENTROIDS * lo..PQ_CENTROIDS * hi], hi - lo)
            })
            .collect();
        Ok(Codebook { dim, chunk_offsets, centroid, centers, tables })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Chunks M: the bytes of one code.
    pub fn chunks(&self) -> usize {
        self.chunk_offsets.len() - 1
    }

    pub fn chunk_offsets(&self) -> &[u32] {
        &self.chunk_offsets
    }

    /// The dimensions chunk `m` covers.
    pub fn chunk_range(&self, m: usize) -> std::ops::Range<usize> {
        self.chunk_offsets[m] as usize..self.chunk_offsets[m + 1] as usize
    }

    /// The data mean subtracted before encoding.
    pub fn centroid(&self) -> &[f32] {
        &self.centroid
    }

    /// Every chunk's 256 centres, concatenated chunk after chunk.
    pub fn centers(&self) -> &[f32] {
        &self.centers
    }

    /// The 256 centres of chunk `m`, row-major.
    pub fn chunk_centers(&self, m: usize) -> &[f32] {
        let r = self.chunk_range(m);
        &self.centers[PQ_CENTROIDS * r.start..PQ_CENTROIDS * r.end]
    }

    /// Encodes `v` (length `dim`) into `out` (length M).
    pub fn encode(&self, v: &[f32], out: &mut [u8]) {
        self.encode_row(v, out, &mut EncodeScratch::new(self.dim));
    }

    /// Encodes `rows.len() / dim` rows into `out` (M bytes per row), in
    /// parallel, converting elements to f32.
    pub fn encode_batch<T: Element>(&self, rows: &[T], out: &mut [u8]) {
        let (dim, chunks) = (self.dim, self.chunks());
        assert!(rows.len().is_multiple_of(dim), "rows must be whole vectors of dimension {dim}");
        assert_eq!(out.len(), rows.len() / dim * chunks, "output must hold M bytes per row");
        rows.par_chunks(ENCODE_BLOCK_ROWS * dim)
            .zip(out.par_chunks_mut(ENCODE_BLOCK_ROWS * chunks))
            .for_each(|(rows, out)| {
                let mut scratch = EncodeScratch::new(dim);
                for (row, code) in rows.chunks_exact(dim).zip(out.chunks_exact_mut(chunks)) {
                    self.encode_row(row, code, &mut scratch);
                }
            });
    }

    fn encode_row<T: Element>(&self, v: &[T], out: &mut [u8], scratch: &mut EncodeScratch) {
        assert_eq!(v.len(), self.dim, "vector dimension differs from the codebook's");
        assert_eq!(out.len(), self.chunks(), "code length differs from the codebook's M");
        let EncodeScratch { residual, distances } = scratch;
        for ((r, x), c) in residual.iter_mut().zip(v).zip(&self.centroid) {
            *r = x.to_f32() - c;
        }
        for ((o, table), w) in out.iter_mut().zip(&self.tables).zip(self.chunk_offsets.windows(2)) {
            let (best, _) = table.nearest(&residual[w[0] as usize..w[1] as usize], distances);
            // A centre index is below PQ_CENTROIDS = 256, so it fits a byte.
            *o = best as u8;
        }
    }

    /// Reconstructs the vector a code stands for into `out` (length `dim`).
    pub fn decode(&self, code: &[u8], out: &mut [f32]) {
        assert_eq!(code.len(), self.chunks(), "code length differs from the codebook's M");
        assert_eq!(out.len(), self.dim, "output dimension differs from the codebook's");
        for (m, &c) in code.iter().enumerate() {
            let r = self.chunk_range(m);
            let width = r.len();
            let center = &self.chunk_centers(m)[c as usize * width..(c as usize + 1) * width];
            for ((o, &mean), &x) in out[r.clone()].iter_mut().zip(&self.centroid[r]).zip(center) {
                *o = mean + x;
            }
        }
    }

    /// A lookup table scoring codes against `query` under `metric`.
    pub fn lookup_table(&self, query: &[f32], metric: Metric) -> LookupTable {
        let mut table = LookupTable::default();
        self.fill_lookup_table(query, metric, &mut table);
        table
    }

    /// Refills `lut` for `query`, reusing its allocation (one per search
    /// thread, not one per query).
    pub fn fill_lookup_table(&self, query: &[f32], metric: Metric, lut: &mut LookupTable) {
        assert_eq!(query.len(), self.dim, "query dimension differs from the codebook's");
        lut.chunks = self.chunks();
        lut.table.clear();
        lut.table.resize(self.chunks() * PQ_CENTROIDS, 0.0);
        let rows = lut.table.chunks_exact_mut(PQ_CENTROIDS);
        let tables = self.tables.iter().zip(self.chunk_offsets.windows(2));
        match metric {
            Metric::L2 => {
                lut.bias = 0.0;
                for (row, (table, w)) in rows.zip(tables) {
                    let (lo, hi) = (w[0] as usize, w[1] as usize);
                    let residual =
                        query[lo..hi].iter().zip(&self.centroid[lo..hi]).map(|(q, c)| q - c);
                    for (j, r) in residual.enumerate() {
                        // Columns hold -2c exactly, so r + 0.5 * (-2c) is
                        // exactly r - c. The direct difference form, not the
                        // dot-product one, keeps entries exact far from the
                        // centroid too.
                        for (t, &c) in row.iter_mut().zip(table.column(j)) {
                            let d = r + 0.5 * c;
                            *t += d * d;
                        }
                    }
                }
            }
            Metric::InnerProduct | Metric::Cosine => {
                lut.bias = -query.iter().zip(&self.centroid).map(|(q, c)| q * c).sum::<f32>();
                for (row, (table, w)) in rows.zip(tables) {
                    for (j, &q) in query[w[0] as usize..w[1] as usize].iter().enumerate() {
                        // -(q c) = (0.5 q)(-2c), exactly.
                        let half = 0.5 * q;
                        for (t, &c) in row.iter_mut().zip(table.column(j)) {
                            *t += half * c;
                        }
                    }
                }
            }
        }
    }
}

/// Per-thread buffers of the encoder.
struct EncodeScratch {
    /// The row minus the centroid.
    residual: Vec<f32>,
    /// Partial distances to one chunk's centres.
    distances: [f32; PQ_CENTROIDS],
}

impl EncodeScratch {
    fn new(dim: usize) -> EncodeScratch {
        EncodeScratch { residual: vec![0f32; dim], distances: [0f32; PQ_CENTROIDS] }
    }
}

/// Up to `params.sample_max` rows of `sample`, a seeded random subset when
/// there are more.
fn subsample<'a>(sample: &'a [f32], dim: usize, params: &PqParams) -> Cow<'a, [f32]> {
    let rows = sample.len() / dim;
    if rows <= params.sample_max {
        return Cow::Borrowed(sample);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    rng.set_stream(SUBSAMPLE_STREAM);
    let mut picked = index::sample(&mut rng, rows, params.sample_max).into_vec();
    picked.sort_unstable();
    let mut out = Vec::with_capacity(picked.len() * dim);
    for i in picked {
        out.extend_from_slice(&sample[i * dim..(i + 1) * dim]);
    }
    Cow::Owned(out)
}

/// The per-dimension mean of row-major `rows`, summed in f64 in row order.
fn mean(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut sums = vec![0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += f64::from(v);
        }
    }
    let n = (rows.len() / dim) as f64;
    sums.into_iter().map(|s| (s / n) as f32).collect()
}

/// Per-query distances from the query to every centre of every chunk: the
/// distance to a code is `bias` plus one table entry per chunk.
#[derive(Clone, Debug, Default)]
pub struct LookupTable {
    chunks: usize,
    /// `table[m * 256 + c]`: the partial distance of centre c of chunk m.
    table: Vec<f32>,
    /// The part of the distance no chunk carries (the query against the
    /// centroid for inner product; 0 for L2).
    bias: f32,
}

impl LookupTable {
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    pub fn table(&self) -> &[f32] {
        &self.table
    }

    pub fn bias(&self) -> f32 {
        self.bias
    }

    /// The distance from the query to the vector `code` stands for.
    #[inline]
    pub fn distance(&self, code: &[u8]) -> f32 {
        assert_eq!(code.len(), self.chunks, "code length differs from the table's M");
        // Rows as fixed-size arrays: indexing one with a byte needs no bounds
        // check, and four independent sums hide the load latency.
        let (rows, _) = self.table.as_chunks::<PQ_CENTROIDS>();
        let (rows4, rows_rest) = rows.as_chunks::<4>();
        let (codes4, codes_rest) = code.as_chunks::<4>();
        let mut sums = [0f32; 4];
        for (r, c) in rows4.iter().zip(codes4) {
            sums[0] += r[0][c[0] as usize];
            sums[1] += r[1][c[1] as usize];
            sums[2] += r[2][c[2] as usize];
            sums[3] += r[3][c[3] as usize];
        }
        let tail: f32 = rows_rest.iter().zip(codes_rest).map(|(r, &c)| r[c as usize]).sum();
        self.bias + ((sums[0] + sums[1]) + (sums[2] + sums[3])) + tail
    }

    /// Scores the codes of nodes `ids` from a flat codes array (node i at
    /// `i*M..(i+1)*M`) into `out`.
    pub fn distance_batch(&self, codes: &[u8], ids: &[u32], out: &mut [f32]) {
        assert_eq!(ids.len(), out.len(), "one output per id");
        let m = self.chunks;
        for (&id, o) in ids.iter().zip(out) {
            let at = id as usize * m;
            *o = self.distance(&codes[at..at + m]);
        }
    }
}

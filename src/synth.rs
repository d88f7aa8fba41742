//! `basalt gen`: seeded synthetic vectors that behave more like embeddings
//! than uniform noise.
//!
//! The model is a Gaussian mixture: each of C clusters has a centre and its
//! own random low-dimensional subspace (intrinsic dimension well below D, with
//! decaying variance per axis), plus a little isotropic noise. Rows are made
//! in blocks of [`BLOCK_ROWS`], each block from its own RNG seeded by
//! (seed, stream, block index), so generation is parallel, deterministic for a
//! seed whatever the thread count, and streamed in constant memory: N = 1e9
//! costs only disk and time. Base and queries come from the same mixture
//! through different streams.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use crate::element::{Element, ElementType};
use crate::vecfile::{VecFileError, VectorWriter};

/// Rows per generation block (the unit of parallelism and of RNG seeding).
pub const BLOCK_ROWS: usize = 8192;
/// Largest number of mixture clusters.
pub const CLUSTERS_MAX: usize = 65_536;
/// Largest size of the mixture model held in memory.
pub const MODEL_BYTES_MAX: usize = 512 << 20;
/// Scale from model units to u8/i8 values.
const INT_SCALE: f32 = 24.0;
/// Isotropic noise added to every row, relative to the subspace spread.
const NOISE: f32 = 0.05;

#[derive(Clone, Debug)]
pub struct GenParams {
    pub n: u64,
    pub dim: usize,
    pub element: ElementType,
    pub clusters: usize,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("invalid generator parameters: {0}")]
    Params(String),
    #[error(transparent)]
    File(#[from] VecFileError),
}

/// The mixture: centres and per-cluster subspace bases.
pub struct Mixture {
    dim: usize,
    intrinsic: usize,
    centres: Vec<f32>,
    bases: Vec<f32>,
    axis_scale: Vec<f32>,
}

/// Intrinsic dimension of each cluster's subspace for a dimension `dim`.
pub fn intrinsic_dim(dim: usize) -> usize {
    (dim / 8).clamp(8, 32).min(dim)
}

impl Mixture {
    pub fn new(dim: usize, clusters: usize, seed: u64) -> Result<Mixture, GenError> {
        if dim == 0 || dim > crate::distance::DIM_MAX {
            return Err(GenError::Params(format!(
                "dimension {dim} is outside 1..={}",
                crate::distance::DIM_MAX
            )));
        }
        if clusters == 0 || clusters > CLUSTERS_MAX {
            return Err(GenError::Params(format!(
                "clusters {clusters} is outside 1..={CLUSTERS_MAX} (CLUSTERS_MAX)"
            )));
        }
        let intrinsic = intrinsic_dim(dim);
        let bytes = clusters * dim * (1 + intrinsic) * 4;
        if bytes > MODEL_BYTES_MAX {
            return Err(GenError::Params(format!(
                "{clusters} clusters x {dim} dims need a {} MiB model, over the {} MiB limit \
                 (MODEL_BYTES_MAX): use fewer clusters",
                bytes >> 20,
                MODEL_BYTES_MAX >> 20
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6261_7361_6c74_0001);
        let centres: Vec<f32> =
            (0..clusters * dim).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
        // Each basis vector has expected norm about 1, so the subspace spread
        // is comparable to the distance between centres (clusters overlap a
        // little, as real embedding neighbourhoods do).
        let inv = 1.0 / (dim as f32).sqrt();
        let bases: Vec<f32> = (0..clusters * intrinsic * dim)
            .map(|_| rng.sample::<f32, _>(StandardNormal) * inv)
            .collect();
        let axis_scale = (0..intrinsic).map(|a| 0.9 / (1.0 + a as f32 * 0.25).sqrt()).collect();
        Ok(Mixture { dim, intrinsic, centres, bases, axis_scale })
    }

    fn clusters(&self) -> usize {
        self.centres.len() / self.dim
    }

    /// Writes row `out` (length dim) from cluster draws of `rng`.
    fn sample_into(&self, rng: &mut ChaCha8Rng, out: &mut [f32]) {
        let c = rng.random_range(0..self.clusters());
        out.copy_from_slice(&self.centres[c * self.dim..(c + 1) * self.dim]);
        let basis = &self.bases[c * self.intrinsic * self.dim..(c + 1) * self.intrinsic * self.dim];
        for (a, row) in basis.chunks_exact(self.dim).enumerate() {
            let z: f32 = rng.sample::<f32, _>(StandardNormal) * self.axis_scale[a];
            for (o, b) in out.iter_mut().zip(row) {
                *o += z * b;
            }
        }
        let noise = NOISE / (self.dim as f32).sqrt();
        for o in out.iter_mut() {
            *o += rng.sample::<f32, _>(StandardNormal) * noise;
        }
    }

    /// Generates rows `first..first+count` of `stream` as `T`.
    pub fn block<T: Element>(&self, seed: u64, stream: u64, block: u64, count: usize) -> Vec<T> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (stream << 56) ^ block,
        );
        let mut row = vec![0f32; self.dim];
        let mut out = Vec::with_capacity(count * self.dim);
        for _ in 0..count {
            self.sample_into(&mut rng, &mut row);
            match T::TYPE {
                ElementType::F32 => out.extend(row.iter().map(|&x| T::from_f32(x))),
                ElementType::U8 => {
                    out.extend(row.iter().map(|&x| T::from_f32(x * INT_SCALE + 128.0)))
                }
                ElementType::I8 => out.extend(row.iter().map(|&x| T::from_f32(x * INT_SCALE))),
            }
        }
        out
    }
}

/// Generates `n` rows of stream `stream` into `path`, calling `progress` with
/// the rows written so far.
pub fn write_stream<T: Element>(
    mixture: &Mixture,
    path: &Path,
    n: u64,
    seed: u64,
    stream: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, GenError> {
    let mut writer = VectorWriter::<T>::create(path, mixture.dim)?;
    let blocks = n.div_ceil(BLOCK_ROWS as u64);
    // Generate a window of blocks in parallel, then write them in order: memory
    // stays at window * BLOCK_ROWS rows whatever n is.
    let window = (rayon::current_num_threads() * 2) as u64;
    let mut b = 0;
    while b < blocks {
        let end = (b + window).min(blocks);
        let made: Vec<Vec<T>> = (b..end)
            .into_par_iter()
            .map(|blk| {
                let first = blk * BLOCK_ROWS as u64;
                let count = (n - first).min(BLOCK_ROWS as u64) as usize;
                mixture.block::<T>(seed, stream, blk, count)
            })
            .collect();
        for rows in made {
            writer.append(&rows)?;
        }
        progress(writer.rows());
        b = end;
    }
    Ok(writer.finish()?)
}

/// Stream ids: base rows and query rows never share an RNG stream.
pub const STREAM_BASE: u64 = 0;
pub const STREAM_QUERIES: u64 = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vecfile::VectorFile;

    /// Same seed gives the same bytes; another seed differs; queries differ from base.
    #[test]
    fn generation_is_deterministic_and_seeded() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mixture::new(24, 5, 7).unwrap();
        let a = dir.path().join("a.fbin");
        let b = dir.path().join("b.fbin");
        let q = dir.path().join("q.fbin");
        write_stream::<f32>(&m, &a, 10_000, 7, STREAM_BASE, &|_| {}).unwrap();
        write_stream::<f32>(&m, &b, 10_000, 7, STREAM_BASE, &|_| {}).unwrap();
        write_stream::<f32>(&m, &q, 100, 7, STREAM_QUERIES, &|_| {}).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let base = VectorFile::open(&a).unwrap().read_all::<f32>().unwrap();
        let qs = VectorFile::open(&q).unwrap().read_all::<f32>().unwrap();
        assert_eq!(base.len(), 10_000 * 24);
        assert_ne!(&base[..24], &qs[..24]);
        let m2 = Mixture::new(24, 5, 8).unwrap();
        let c = dir.path().join("c.fbin");
        write_stream::<f32>(&m2, &c, 10_000, 8, STREAM_BASE, &|_| {}).unwrap();
        assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    }

    /// Integer outputs use the type's range and are not constant.
    #[test]
    fn integer_types_span_their_range() {
        let m = Mixture::new(32, 4, 1).unwrap();
        let u = m.block::<u8>(1, 0, 0, 500);
        let (lo, hi) = (u.iter().min().unwrap(), u.iter().max().unwrap());
        assert!(*lo < 100 && *hi > 156, "u8 range {lo}..{hi}");
        let i = m.block::<i8>(1, 0, 0, 500);
        assert!(i.iter().any(|&x| x < -20) && i.iter().any(|&x| x > 20));
    }

    /// Bad parameters are rejected with the limit's name.
    #[test]
    fn limits_are_enforced() {
        assert!(Mixture::new(0, 1, 0).is_err());
        assert!(Mixture::new(8, 0, 0).is_err());
        let e = Mixture::new(16_384, 60_000, 0).err().unwrap().to_string();
        assert!(e.contains("MODEL_BYTES_MAX"), "{e}");
    }
}

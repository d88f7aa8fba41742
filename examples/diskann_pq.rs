//! Experiment tool: rewrites a basalt index with the PQ codebook and codes of
//! a Microsoft DiskANN disk index built from the same vectors, keeping
//! basalt's graph and hot list; with `diskann_graph` it makes the 2x2 of
//! graph x PQ that separates their shares of a difference.
//!
//!     cargo run --release --example diskann_pq -- BASALT_INDEX DISKANN_DIR OUT
//!
//! DiskANN's `ann_pq_pivots.bin` (0.7.0) is a bin of 4 u64 offsets to: the
//! pivots (256 x dim f32), the centroid (dim f32), the chunk offsets (M + 1
//! u32), each a bin with its own (u32 rows, u32 cols) header;
//! `ann_pq_compressed.bin` is (u32 n, u32 M) then n x M code bytes.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use basalt::format::codes::CodesWriter;
use basalt::format::pq::{PqFileMeta, write_codebook};
use basalt::index::{CODES_FILE, IndexFiles, MANIFEST_FILE, PQ_FILE};
use basalt::pq::Codebook;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn f32s(b: &[u8], at: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| f32::from_le_bytes(b[at + 4 * i..at + 4 * i + 4].try_into().expect("4")))
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [src, dk, out] = args.as_slice() else {
        bail!("usage: diskann_pq BASALT_INDEX DISKANN_DIR OUT");
    };
    let files = IndexFiles::open(src)?;
    let header = files.graph_header()?;
    // DiskANN numbers its nodes by input row; so must the basalt index.
    ensure!(
        header.placement == basalt::format::graph::Placement::RowOrder,
        "{} is packed (nodes are not rows): build it with --placement row-order",
        src.display()
    );
    let piv = fs::read(dk.join("ann_pq_pivots.bin")).context("pivots")?;
    let offs: Vec<usize> = (0..4)
        .map(|i| u64::from_le_bytes(piv[8 + 8 * i..16 + 8 * i].try_into().expect("8")) as usize)
        .collect();
    let (k, dim) = (u32_at(&piv, offs[0]) as usize, u32_at(&piv, offs[0] + 4) as usize);
    ensure!(k == 256 && dim == header.dim as usize, "pivots {k} x {dim}");
    let pivots = f32s(&piv, offs[0] + 8, k * dim);
    let centroid = f32s(&piv, offs[1] + 8, dim);
    let m1 = u32_at(&piv, offs[2]) as usize;
    let chunk_offsets: Vec<u32> = (0..m1).map(|i| u32_at(&piv, offs[2] + 8 + 4 * i)).collect();
    // basalt stores each chunk's 256 centres contiguously; DiskANN one row of
    // `dim` per centre.
    let mut centres = Vec::with_capacity(k * dim);
    for c in 0..m1 - 1 {
        let (a, b) = (chunk_offsets[c] as usize, chunk_offsets[c + 1] as usize);
        for r in 0..k {
            centres.extend_from_slice(&pivots[r * dim + a..r * dim + b]);
        }
    }
    let cb = Codebook::from_parts(dim, chunk_offsets, centroid, centres)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let comp = fs::read(dk.join("ann_pq_compressed.bin"))?;
    let (n, m) = (u32_at(&comp, 0) as u64, u32_at(&comp, 4) as usize);
    ensure!(n == header.count && m == cb.chunks(), "codes {n} x {m}");
    let gen_dir = out.join(files.manifest.generation_dir());
    fs::create_dir_all(&gen_dir)?;
    for name in ["graph", "hot"] {
        fs::copy(files.path(name), gen_dir.join(name))?;
    }
    let ident = files.manifest.ident();
    let meta = PqFileMeta { ident, metric: header.metric, ip_norm_max: header.ip_norm_max };
    write_codebook(&gen_dir.join(PQ_FILE), &cb, &meta)?;
    let mut w = CodesWriter::create(&gen_dir.join(CODES_FILE), m, n, ident)?;
    w.append(&comp[8..8 + n as usize * m])?;
    w.finish()?;
    let mut man = files.manifest.clone();
    for f in man.files.iter_mut() {
        let p = gen_dir.join(&f.name);
        f.bytes = fs::metadata(&p)?.len();
        f.xxh3 = basalt::index::verify::file_xxh3(&p)?;
    }
    fs::write(out.join(MANIFEST_FILE), man.encode())?;
    eprintln!("wrote {} with DiskANN's PQ ({m} chunks)", out.display());
    Ok(())
}

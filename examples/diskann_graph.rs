//! Experiment tool: rewrites a basalt index with the graph (adjacency and
//! medoid) of a Microsoft DiskANN disk index built from the same vectors,
//! keeping basalt's vectors, PQ codebook, codes and hot list. Searching the
//! result with basalt separates the graph's share of a recall or read
//! difference from the PQ's (bench/README.md, "parity on held-out data").
//!
//!     cargo run --release --example diskann_graph -- BASALT_INDEX DISKANN_DIR OUT
//!
//! DiskANN's `ann_disk.index` (0.7.0): sector 0 holds a bin of u64 metadata
//! (npts, ndims, medoid, max_node_len, nodes_per_sector, ...); node i sits at
//! sector 1 + i / nodes_per_sector, offset (i % nodes_per_sector) *
//! max_node_len, as [vector | u32 degree | degree x u32 ids].

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use basalt::format::SECTOR_BYTES;
use basalt::format::graph::GraphWriter;
use basalt::index::{GRAPH_FILE, IndexFiles, MANIFEST_FILE};

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [src, dk, out] = args.as_slice() else {
        bail!("usage: diskann_graph BASALT_INDEX DISKANN_DIR OUT");
    };
    let files = IndexFiles::open(src)?;
    let header = files.graph_header()?;
    // DiskANN numbers its nodes by input row; so must the basalt index.
    ensure!(
        header.placement == basalt::format::graph::Placement::RowOrder,
        "{} is packed (nodes are not rows): build it with --placement row-order",
        src.display()
    );
    let layout = header.layout();
    let graph = fs::read(files.path(GRAPH_FILE))?;
    let disk = fs::read(dk.join("ann_disk.index")).context("ann_disk.index")?;
    // The metadata bin: u32 count, u32 1, then count u64 values.
    let count = u32_at(&disk, 0) as usize;
    ensure!(count >= 5 && u32_at(&disk, 4) == 1, "unexpected DiskANN metadata");
    let meta: Vec<u64> = (0..count).map(|i| u64_at(&disk, 8 + 8 * i)).collect();
    let (npts, ndims, medoid, node_len, per_sector) = (meta[0], meta[1], meta[2], meta[3], meta[4]);
    ensure!(npts == header.count && ndims == u64::from(header.dim), "shapes differ");
    ensure!(per_sector > 0, "multi-sector DiskANN nodes are not handled");
    let vec_bytes = ndims as usize * header.element.size_bytes();
    let mut h = header.clone();
    h.medoid = u32::try_from(medoid)?;
    fs::create_dir_all(out.join(files.manifest.generation_dir()))?;
    for name in ["pq", "codes", "hot"] {
        fs::copy(files.path(name), out.join(files.manifest.generation_dir()).join(name))?;
    }
    let gpath = out.join(files.manifest.generation_dir()).join(GRAPH_FILE);
    let mut w = GraphWriter::create(&gpath, &h)?;
    let mut vector = vec![0f32; header.dim as usize];
    let mut degrees = 0u64;
    for id in 0..npts {
        let at = layout.record_offset(id as u32) as usize;
        let rec = layout
            .decode_record(id as u32, &graph[at..at + layout.record_bytes as usize], false)
            .map_err(|f| anyhow::anyhow!("node {id}: {f}"))?;
        rec.vector_into(&mut vector);
        let d_at = (1 + id / per_sector) as usize * SECTOR_BYTES
            + (id % per_sector) as usize * node_len as usize;
        let deg = u32_at(&disk, d_at + vec_bytes) as usize;
        let ids: Vec<u32> = (0..deg.min(header.degree_max as usize))
            .map(|j| u32_at(&disk, d_at + vec_bytes + 4 + 4 * j))
            .filter(|&n| n as u64 != id)
            .collect();
        degrees += ids.len() as u64;
        w.append(&vector, &ids)?;
    }
    w.finish()?;
    let mut m = files.manifest.clone();
    m.files[0].bytes = fs::metadata(&gpath)?.len();
    m.files[0].xxh3 = basalt::index::verify::file_xxh3(&gpath)?;
    fs::write(out.join(MANIFEST_FILE), m.encode())?;
    eprintln!(
        "wrote {} with DiskANN's graph: medoid {medoid}, mean degree {:.1}",
        out.display(),
        degrees as f64 / npts as f64
    );
    let _ = Path::new("");
    Ok(())
}

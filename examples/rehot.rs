//! Experiment tool: recomputes an index's hot list with other warm-up
//! parameters (list size, beam width, sample count) into a copy of the
//! index, so that cache policies can be compared without rebuilding the
//! graph. The adjacency is read from the graph file into memory.
//!
//!     cargo run --release --example rehot -- INDEX OUT LIST_SIZE BEAM [SAMPLES]

use std::fs;
use std::path::PathBuf;

use anyhow::{Result, bail};
use basalt::element::Element;
use basalt::index::pqspace::PqSpace;
use basalt::index::{HOT_FILE, IndexFiles, MANIFEST_FILE};
use basalt::search::hot::{WarmUp, rank_with, sample_ids};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: rehot INDEX OUT LIST_SIZE BEAM [SAMPLES]");
    }
    let (src, out) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let (l, w): (usize, usize) = (args[2].parse()?, args[3].parse()?);
    let files = IndexFiles::open(&src)?;
    let loaded = files.clone().load()?;
    let h = &loaded.header;
    let layout = h.layout();
    let graph = fs::read(files.path("graph"))?;
    let n = h.count;
    let dim = h.dim as usize;
    let mut adj: Vec<Vec<u32>> = Vec::with_capacity(n as usize);
    let mut vectors: Vec<f32> = Vec::with_capacity(n as usize * dim);
    let mut v = vec![0f32; dim];
    for id in 0..n as u32 {
        let at = layout.record_offset(id) as usize;
        let rec = layout
            .decode_record(id, &graph[at..at + layout.record_bytes as usize], true)
            .map_err(|f| anyhow::anyhow!("{f}"))?;
        adj.push(rec.neighbors().collect());
        basalt::with_element!(h.element, T => {
            let mut t = vec![T::default(); dim];
            rec.vector_into(&mut t);
            v.iter_mut().zip(&t).for_each(|(a, b)| *a = b.to_f32());
        });
        vectors.extend_from_slice(&v);
    }
    let mut sample = sample_ids(n, files.manifest.build.seed);
    // Without SAMPLES, the build's own sample (same seed, same size).
    if let Some(s) = args.get(4) {
        let want: usize = s.parse()?;
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
        sample = rand::seq::index::sample(&mut rng, n as usize, want.min(n as usize))
            .into_iter()
            .map(|i| i as u32)
            .collect();
    }
    let mut queries = Vec::with_capacity(sample.len() * dim);
    for &id in &sample {
        queries.extend_from_slice(&vectors[id as usize * dim..(id as usize + 1) * dim]);
    }
    let warm = WarmUp {
        codebook: &loaded.codebook,
        codes: loaded.codes.bytes(),
        chunks: loaded.codes.chunks(),
        space: PqSpace::new(h.metric, h.ip_norm_max),
        medoid: h.medoid,
        n,
    };
    let hot = rank_with(&warm, &queries, dim, l, w, |id, o| o.extend_from_slice(&adj[id as usize]));
    let gen_dir = out.join(files.manifest.generation_dir());
    fs::create_dir_all(&gen_dir)?;
    for name in ["graph", "pq", "codes"] {
        let dst = gen_dir.join(name);
        if !dst.exists() {
            fs::hard_link(files.path(name), &dst)
                .or_else(|_| fs::copy(files.path(name), &dst).map(|_| ()))?;
        }
    }
    let bytes = basalt::format::hot::encode_hot(&hot, files.manifest.ident());
    fs::write(gen_dir.join(HOT_FILE), &bytes)?;
    let mut m = files.manifest.clone();
    m.files[3].bytes = bytes.len() as u64;
    m.files[3].xxh3 = xxhash_rust::xxh3::xxh3_64(&bytes);
    fs::write(out.join(MANIFEST_FILE), m.encode())?;
    eprintln!(
        "{}: hot list of {} nodes from {} samples at L {l}, W {w}",
        out.display(),
        hot.len(),
        sample.len()
    );
    Ok(())
}

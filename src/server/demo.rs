//! `basalt serve --demo`: the embedded default. Makes (once) a collection
//! `demo` of seeded synthetic vectors with payloads in the data directory,
//! so the daemon has something to answer; prints what to try next.

use std::path::Path;

use anyhow::{Context, Result};

use crate::collection::import::import;
use crate::distance::Metric;
use crate::index::build::BuildOptions;
use crate::synth::{Mixture, write_stream};

pub const DEMO_COLLECTION: &str = "demo";
const DEMO_POINTS: u64 = 20_000;
const DEMO_DIM: usize = 64;
const DEMO_SEED: u64 = 42;

/// Builds `data/demo` unless it is there.
pub fn ensure(data: &Path, cfg: &super::config::ServerConfig) -> Result<()> {
    let out = data.join(DEMO_COLLECTION);
    if out.join(crate::collection::config::CONFIG_FILE).exists() {
        return Ok(());
    }
    eprintln!(
        "basalt: building the demo collection ({DEMO_POINTS} x {DEMO_DIM}, cosine) in {}",
        out.display()
    );
    let tmp = data.join(".demo-build");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let vectors = tmp.join("vectors.fbin");
    let mixture = Mixture::new(DEMO_DIM, 16, DEMO_SEED)?;
    write_stream::<f32>(&mixture, &vectors, DEMO_POINTS, DEMO_SEED, 0, &|_| {})?;
    let colors = ["red", "green", "blue", "amber"];
    let payloads = (0..DEMO_POINTS)
        .map(|i| {
            Some(serde_json::json!({
                "row": i,
                "color": colors[(i % colors.len() as u64) as usize],
            }))
        })
        .collect();
    let opts = BuildOptions {
        metric: Metric::Cosine,
        graph: crate::vamana::BuildParams {
            degree_max: cfg.collections.degree_max.min(32),
            list_size: 64,
            seed: DEMO_SEED,
            ..Default::default()
        },
        pq_chunks: 16,
        ..Default::default()
    };
    let built = tmp.join(DEMO_COLLECTION);
    import(&vectors, None, Some(payloads), &built, &opts)
        .context("building the demo collection")?;
    std::fs::rename(&built, &out).with_context(|| format!("moving it to {}", out.display()))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

pub fn print_next_steps(addr: &std::net::SocketAddr) {
    let url = format!("http://{addr}");
    eprintln!(
        "\nbasalt is serving {url} (Ctrl-C stops it). Try:\n\
         \n  curl -s {url}/collections/{DEMO_COLLECTION}\
         \n  curl -s -X POST {url}/collections/{DEMO_COLLECTION}/points/scroll -H 'content-type: application/json' -d '{{\"limit\": 2, \"with_vector\": true}}'\
         \n  curl -s {url}/metrics | grep basalt_points\
         \n\n  python3 -m pip install qdrant-client\
         \n  python3 -c 'from qdrant_client import QdrantClient; c = QdrantClient(url=\"{url}\"); \
         v = c.retrieve(\"{DEMO_COLLECTION}\", [7], with_vectors=True)[0].vector; \
         print(c.query_points(\"{DEMO_COLLECTION}\", query=v, limit=3, with_payload=True))'\n"
    );
}

//! Filtered search through the real `basalt serve` on loopback, checked
//! against qdrant-client's local mode (`QdrantClient(":memory:")`, which
//! evaluates every filter by brute force) by tests/py/filter_oracle.py:
//! every supported condition, exact path id for id, the planner never short
//! of min(k, matches), count, scroll, delete by filter, payload indexes
//! made mid-way and kept through writes and background merges.

mod common;

use common::Server;

#[test]
fn filters_match_qdrant_client_local_mode() {
    let py = common::python();
    let dir = tempfile::tempdir().expect("tempdir");
    // Small merge thresholds: points reach disk generations (and the
    // payload indexes) while others stay in the delta.
    let s = Server::start(
        dir.path(),
        &[
            ("BASALT_COLLECTIONS_DELTA_POINTS_MERGE", "400"),
            ("BASALT_COLLECTIONS_TOMBSTONES_MERGE", "200"),
        ],
    );
    let out = std::process::Command::new(&py)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/filter_oracle.py"))
        .arg(format!("http://{}", s.addr))
        .output()
        .expect("run python");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "filter oracle failed:\n{text}\n--- daemon log:\n{}", s.log());
    assert!(text.contains("filter oracle: ok"), "{text}");
}

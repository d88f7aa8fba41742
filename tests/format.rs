//! On-disk format compatibility and file identity, through the library:
//! the checked-in fixtures of every format version, records and files
//! carried over from another build of the same shape, hostile manifests.

#![allow(clippy::unwrap_used, reason = "a test panics to report its failure")]

use std::fs;
use std::path::{Path, PathBuf};

use basalt::index::build::BuildOptions;
use basalt::index::verify::verify_index;
use basalt::index::{IndexFiles, Manifest, read_manifest};
use basalt::search::{Index, OpenOptions, SearchParams};
use basalt::vamana::BuildParams;
use basalt::vecfile::VectorFile;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn queries() -> Vec<Vec<f32>> {
    let q = VectorFile::open(&fixture("queries-5x16.fbin")).unwrap();
    let mut v = Vec::new();
    q.read_rows_f32(0, q.len() as usize, &mut v).unwrap();
    v.chunks(q.dim()).map(<[f32]>::to_vec).collect()
}

/// The 5 nearest base rows of each fixture query, by brute force.
fn exact_top5() -> Vec<Vec<u32>> {
    let b = VectorFile::open(&fixture("base-300x16.fbin")).unwrap();
    let mut base = Vec::new();
    b.read_rows_f32(0, b.len() as usize, &mut base).unwrap();
    queries()
        .iter()
        .map(|q| {
            let mut d: Vec<(f32, u32)> = base
                .chunks(16)
                .enumerate()
                .map(|(i, x)| (x.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum(), i as u32))
                .collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            d.iter().take(5).map(|x| x.1).collect()
        })
        .collect()
}

/// The answers the version-2 fixture gave when it was made (k = 5, L = 32).
const V2_FIXTURE_ANSWERS: [[u32; 5]; 5] = [
    [237, 16, 251, 3, 152],
    [50, 92, 295, 89, 263],
    [177, 212, 285, 138, 133],
    [263, 224, 61, 89, 112],
    [53, 288, 144, 161, 145],
];

// The checked-in version-2 index (built by basalt 0.1 with format 2) still
// verifies, opens, and answers as it did, which is also the exact answer.
#[test]
fn version_2_fixture_opens_and_answers_as_recorded() {
    let dir = fixture("v2-l2-300x16");
    let r = verify_index(&dir).unwrap();
    assert_eq!((r.nodes, r.reachable), (300, 300));
    let exact = exact_top5();
    for reader in [basalt::io::ReaderKind::Uring, basalt::io::ReaderKind::Pread] {
        let index =
            Index::open(&dir, &OpenOptions { reader, cache_nodes: 10, ..Default::default() })
                .unwrap();
        let mut s = index.searcher().unwrap();
        let params = SearchParams { k: 5, list_size: 32, beam_width: 4 };
        for (i, q) in queries().iter().enumerate() {
            let found = index.search(&mut s, q, &params).unwrap();
            assert_eq!(found.ids, V2_FIXTURE_ANSWERS[i], "{reader} query {i}");
            assert_eq!(found.ids, exact[i], "query {i} against brute force");
        }
    }
}

// A version-1 index is refused by every command with the command that
// rebuilds it, parameters and source included.
#[test]
fn version_1_fixture_is_refused_with_the_rebuild_command() {
    let dir = fixture("v1-l2-300x16");
    let open = Index::open(&dir, &OpenOptions::default()).err().unwrap().to_string();
    let verify = verify_index(&dir).unwrap_err().to_string();
    for e in [open, verify] {
        assert!(e.contains("version 1"), "{e}");
        assert!(e.contains("basalt build --data") && e.contains("--force"), "{e}");
        assert!(e.contains("--R 8") && e.contains("--pq-bytes 4") && e.contains("--seed 3"), "{e}");
    }
}

fn build_copy(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let opts = BuildOptions {
        graph: BuildParams { degree_max: 8, list_size: 16, seed: 3, ..Default::default() },
        pq_chunks: 4,
        ..Default::default()
    };
    basalt::index::build::build_index(&fixture("base-300x16.fbin"), &out, &opts, &()).unwrap();
    out
}

/// Rewrites `dir`'s manifest with `edit` applied and a valid checksum.
fn rewrite_manifest(dir: &Path, edit: impl FnOnce(&mut Manifest)) {
    let mut m = read_manifest(dir).unwrap();
    edit(&mut m);
    fs::write(dir.join("manifest"), m.encode()).unwrap();
}

// Two builds of the same input and parameters differ only in their build id:
// a record carried from one graph into the other is found by verify, named
// by node and sector, even with the manifest's hash updated to match.
#[test]
fn transplanted_record_is_named_by_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let a = build_copy(tmp.path(), "a");
    let b = build_copy(tmp.path(), "b");
    let (ga, gb) = (a.join("gen-0/graph"), b.join("gen-0/graph"));
    let header = IndexFiles::open(&a).unwrap().graph_header().unwrap();
    let l = header.layout();
    let node = 123u32;
    let at = l.record_offset(node) as usize;
    let len = l.record_bytes as usize;
    let mut bytes_a = fs::read(&ga).unwrap();
    let bytes_b = fs::read(&gb).unwrap();
    bytes_a[at..at + len].copy_from_slice(&bytes_b[at..at + len]);
    fs::write(&ga, &bytes_a).unwrap();
    let hash = basalt::index::verify::file_xxh3(&ga).unwrap();
    rewrite_manifest(&a, |m| m.files[0].xxh3 = hash);
    let e = verify_index(&a).unwrap_err().to_string();
    assert!(e.contains(&format!("node {node} (sector {})", l.sector_of(node))), "{e}");
    assert!(e.contains("another build"), "{e}");
}

// A graph, codebook or codes file from another build of the same shape is
// refused at open, naming the file and both builds, even when the
// manifest's size and hash were updated to match it.
#[test]
fn file_from_another_build_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let b = build_copy(tmp.path(), "b");
    for (i, name) in ["graph", "pq", "codes"].into_iter().enumerate() {
        let a = build_copy(tmp.path(), &format!("a{i}"));
        fs::copy(b.join("gen-0").join(name), a.join("gen-0").join(name)).unwrap();
        let theirs = read_manifest(&b).unwrap().files[i].clone();
        rewrite_manifest(&a, |m| m.files[i] = theirs);
        let e = Index::open(&a, &OpenOptions::default()).err().unwrap().to_string();
        assert!(e.contains("another index") && e.contains(name), "{name}: {e}");
        let e = verify_index(&a).unwrap_err().to_string();
        assert!(e.contains("another index"), "{name}: {e}");
    }
}

// A manifest naming files by path (separators, `..`, absolute paths) or
// listing files that are not the layout's is refused, never followed.
#[test]
fn manifest_file_names_must_be_plain() {
    let tmp = tempfile::tempdir().unwrap();
    let a = build_copy(tmp.path(), "a");
    let good_manifest = read_manifest(&a).unwrap();
    for bad in ["../b/gen-0/graph", "/etc/passwd", "gen-0/graph", "..", "", "sub/graph"] {
        let mut m = good_manifest.clone();
        m.files[0].name = bad.to_string();
        fs::write(a.join("manifest"), m.encode()).unwrap();
        let e = IndexFiles::open(&a).unwrap_err().to_string();
        // Refused by the plain-name check itself, before the layout check.
        assert!(e.contains("file name"), "{bad:?}: {e}");
    }
    let mut m = good_manifest.clone();
    m.files.swap(1, 2);
    fs::write(a.join("manifest"), m.encode()).unwrap();
    assert!(IndexFiles::open(&a).is_err());
    fs::write(a.join("manifest"), good_manifest.encode()).unwrap();
    verify_index(&a).unwrap();
    // A flipped byte anywhere in the manifest fails its checksum or parse.
    let good = fs::read(a.join("manifest")).unwrap();
    for at in (0..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        fs::write(a.join("manifest"), &bad).unwrap();
        assert!(IndexFiles::open(&a).is_err(), "flip at {at}");
    }
}

//! Publishing: what may be replaced, what is refused (named), an injected
//! failed exchange, and the cleanup of killed builds' temporary directories.

use std::fs;

use super::*;
use crate::index::build::{BuildOptions, build_index};
use crate::index::read_manifest;
use crate::index::verify::verify_index;
use crate::synth::{Mixture, STREAM_BASE, write_stream};
use crate::vamana::BuildParams;

fn base(dir: &Path) -> PathBuf {
    let p = dir.join("b.fbin");
    if !p.exists() {
        let m = Mixture::new(8, 3, 5).unwrap();
        write_stream::<f32>(&m, &p, 200, 5, STREAM_BASE, &|_| {}).unwrap();
    }
    p
}

fn opts(force: bool, seed: u64) -> BuildOptions {
    BuildOptions {
        graph: BuildParams { degree_max: 8, list_size: 16, seed, ..Default::default() },
        pq_chunks: 2,
        force,
        ..Default::default()
    }
}

/// Builds an index at `out` and returns its build id.
fn build(dir: &Path, out: &Path, force: bool) -> String {
    build_index(&base(dir), out, &opts(force, 1), &()).unwrap().build_id
}

fn build_id(out: &Path) -> String {
    read_manifest(out).unwrap().build_id
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

// A directory without a basalt manifest is never replaced, even with --force,
// and nothing in it is touched.
#[test]
fn non_index_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mine");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("manifest"), b"{\"my\": \"own file\"}").unwrap();
    fs::write(out.join("thesis.tex"), b"years of work").unwrap();
    let e = check_target(&out, true).unwrap_err().to_string();
    assert!(e.contains("not a basalt index"), "{e}");
    let e = build_index(&base(dir.path()), &out, &opts(true, 1), &()).unwrap_err().to_string();
    assert!(e.contains("not a basalt index"), "{e}");
    assert_eq!(names(&out), ["manifest", "thesis.tex"]);
}

// A user's file inside a real index makes a --force build refuse, naming the
// file, before any work; the index is left as it was.
#[test]
fn foreign_file_inside_an_index_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    let id = build(dir.path(), &out, false);
    for extra in ["notes.txt", "gen-0/extra.bin"] {
        fs::write(out.join(extra), b"mine").unwrap();
        let e = check_target(&out, true).unwrap_err().to_string();
        assert!(e.contains(extra), "{extra}: {e}");
        let e = build_index(&base(dir.path()), &out, &opts(true, 2), &()).unwrap_err().to_string();
        assert!(e.contains(extra), "{extra}: {e}");
        assert_eq!(build_id(&out), id);
        assert!(out.join(extra).exists());
        fs::remove_file(out.join(extra)).unwrap();
    }
    // Only the layout's files are left after a clean replacement.
    let new = build_index(&base(dir.path()), &out, &opts(true, 2), &()).unwrap().build_id;
    assert_ne!(new, id);
    assert_eq!(names(&out), ["gen-0", "manifest"]);
    assert_eq!(names(&out.join("gen-0")), ["codes", "graph", "hot", "pq"]);
    assert_eq!(names(dir.path()), ["b.fbin", "idx"], "no temporary directory is left");
}

// Without --force an index is never replaced; an empty directory is used.
#[test]
fn force_is_needed_and_empty_directories_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    fs::create_dir(&out).unwrap();
    let id = build(dir.path(), &out, false);
    let e = build_index(&base(dir.path()), &out, &opts(false, 2), &()).unwrap_err().to_string();
    assert!(e.contains("--force"), "{e}");
    assert_eq!(build_id(&out), id);
}

// Bad output paths are refused before any work: `.`, a path inside an index,
// a regular file.
#[test]
fn bad_output_paths_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    build(dir.path(), &out, false);
    for bad in [PathBuf::from("."), out.join("sub"), out.join("gen-0/new"), dir.path().join("..")] {
        assert!(check_target(&bad, true).is_err(), "{}", bad.display());
    }
    let e = check_target(&out.join("sub"), true).unwrap_err().to_string();
    assert!(e.contains("inside the index"), "{e}");
    fs::write(dir.path().join("file"), b"x").unwrap();
    let e = check_target(&dir.path().join("file"), true).unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
}

// An exchange that fails (injected) leaves the old index in place, whole and
// verifiable; the real exchange then swaps in the new one and removes the
// old one's files.
#[test]
fn failed_exchange_keeps_the_old_index() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    let old = build(dir.path(), &out, false);
    let staged = dir.path().join("staged");
    let new = build(dir.path(), &staged, false);
    let tmp = temp_dir_for(&out).unwrap();
    fs::rename(&staged, &tmp).unwrap();
    let target = check_target(&out, true).unwrap();
    let failing = |_: &Path, _: &Path, _: RenameFlags| -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    };
    let e = publish_with(&tmp, &out, &target, &failing).unwrap_err().to_string();
    assert!(e.contains("old one is unchanged"), "{e}");
    assert_eq!(build_id(&out), old);
    verify_index(&out).unwrap();
    assert_eq!(build_id(&tmp), new, "the new index is still staged");
    // The real exchange.
    let published = publish(&tmp, &out, &target).unwrap();
    assert!(published.leftover.is_none());
    assert_eq!(build_id(&out), new);
    verify_index(&out).unwrap();
    assert!(!tmp.exists(), "the replaced index is removed");
}

// A path that changed during the build (an index appeared, or a user file
// was added) is not replaced.
#[test]
fn a_path_that_changed_during_the_build_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    let target = check_target(&out, true).unwrap();
    let staged = dir.path().join("staged");
    build(dir.path(), &staged, false);
    let tmp = temp_dir_for(&out).unwrap();
    fs::rename(&staged, &tmp).unwrap();
    let theirs = build(dir.path(), &out, false);
    let e = publish(&tmp, &out, &target).unwrap_err().to_string();
    assert!(e.contains("changed while"), "{e}");
    assert_eq!(build_id(&out), theirs);
    // Now an index was there at the check, and a user file appeared in it.
    let target = check_target(&out, true).unwrap();
    fs::write(out.join("added-later.txt"), b"mine").unwrap();
    let e = publish(&tmp, &out, &target).unwrap_err().to_string();
    assert!(e.contains("added-later.txt"), "{e}");
    assert_eq!(build_id(&out), theirs);
    assert!(out.join("added-later.txt").exists());
}

// A symlink named like a dead build's temporary directory is never followed:
// the index it points at survives the cleanup.
#[test]
fn stale_cleanup_never_follows_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    let id = build(dir.path(), &other, false);
    let out = dir.path().join("idx");
    std::os::unix::fs::symlink(&other, dir.path().join(".idx.building-9999997-0000abcd")).unwrap();
    std::os::unix::fs::symlink(&other, dir.path().join(".idx.building--5")).unwrap();
    let stale = clean_stale(&out).unwrap();
    assert!(stale.removed.is_empty(), "{:?}", stale.removed);
    assert_eq!(stale.left.len(), 1, "{:?}", stale.left);
    assert_eq!(build_id(&other), id);
    verify_index(&other).unwrap();
}

// Temporary directories of dead builds are removed when they hold only
// layout files, and named when they hold anything else.
#[test]
fn stale_temporary_directories_are_cleaned_or_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    // Pids above the kernel's maximum (4194304) never run.
    let dead = dir.path().join(".idx.building-9999998");
    fs::create_dir_all(dead.join("gen-0")).unwrap();
    fs::write(dead.join("gen-0/pq"), b"partial").unwrap();
    // A killed partitioned build's scratch files go with it.
    let scratch = dead.join(crate::index::partition::SCRATCH_DIR);
    fs::create_dir_all(&scratch).unwrap();
    for f in ["shard-0.vectors", "shard-0.members", "shard-1.lists", "adjacency"] {
        fs::write(scratch.join(f), b"partial").unwrap();
    }
    // ... but a foreign file in a scratch directory is named, not removed.
    let odd_scratch = dir.path().join(".idx.building-9999997");
    fs::create_dir_all(odd_scratch.join(crate::index::partition::SCRATCH_DIR)).unwrap();
    fs::write(odd_scratch.join(crate::index::partition::SCRATCH_DIR).join("notes.txt"), b"x")
        .unwrap();
    let odd = dir.path().join(".idx.building-9999999");
    fs::create_dir_all(&odd).unwrap();
    fs::write(odd.join("precious"), b"x").unwrap();
    let mine = dir.path().join(format!(".idx.building-{}", std::process::id()));
    fs::create_dir_all(&mine).unwrap();
    let stale = clean_stale(&out).unwrap();
    assert_eq!(stale.removed, vec![dead.clone()]);
    assert_eq!(stale.left.len(), 2, "{:?}", stale.left);
    assert!(stale.left.iter().any(|(_, why)| why.contains("precious")), "{:?}", stale.left);
    assert!(stale.left.iter().any(|(_, why)| why.contains("notes.txt")), "{:?}", stale.left);
    assert!(!dead.exists() && odd.join("precious").exists() && mine.exists());
}

// A version-1 index can be rebuilt in place with --force (its layout is
// recognised), though it can no longer be opened.
#[test]
fn version_1_index_is_replaced_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("old");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-l2-300x16");
    fs::create_dir_all(out.join("gen-0")).unwrap();
    for f in ["manifest", "gen-0/graph", "gen-0/pq", "gen-0/codes"] {
        fs::copy(fixture.join(f), out.join(f)).unwrap();
    }
    assert!(matches!(check_target(&out, true).unwrap(), Target::Index(_)));
    let e = verify_index(&out).unwrap_err().to_string();
    assert!(e.contains("version 1") && e.contains("basalt build"), "{e}");
    build(dir.path(), &out, true);
    verify_index(&out).unwrap();
}

//! Round trips of every format and every bad-file case.

use super::*;
use std::io::Write as _;

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

fn err_text<T>(r: Result<T, VecFileError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Rows written by VectorWriter read back identically, in every layout and type.
#[test]
fn round_trip_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 7;
    let f: Vec<f32> = (0..dim * 5).map(|i| i as f32 * 0.5 - 3.0).collect();
    let u: Vec<u8> = (0..dim * 5).map(|i| (i * 37 % 256) as u8).collect();
    let s: Vec<i8> = (0..dim * 5).map(|i| (i as i32 * 37 % 256 - 128) as i8).collect();
    for name in ["a.fbin", "a.fvecs"] {
        let p = dir.path().join(name);
        let mut w = VectorWriter::<f32>::create(&p, dim).unwrap();
        w.append(&f[..dim * 2]).unwrap();
        w.append(&f[dim * 2..]).unwrap();
        assert_eq!(w.finish().unwrap(), 5);
        let vf = VectorFile::open(&p).unwrap();
        assert_eq!((vf.len(), vf.dim(), vf.element_type()), (5, dim, ElementType::F32));
        assert_eq!(vf.read_all::<f32>().unwrap(), f);
        let mut part = Vec::new();
        vf.read_rows::<f32>(2, 2, &mut part).unwrap();
        assert_eq!(part, &f[2 * dim..4 * dim]);
    }
    for name in ["b.u8bin", "b.bvecs"] {
        let p = dir.path().join(name);
        let mut w = VectorWriter::<u8>::create(&p, dim).unwrap();
        w.append(&u).unwrap();
        w.finish().unwrap();
        let vf = VectorFile::open(&p).unwrap();
        assert_eq!(vf.read_all::<u8>().unwrap(), u);
        let mut as_f = Vec::new();
        vf.read_rows_f32(1, 1, &mut as_f).unwrap();
        assert_eq!(as_f, u[dim..2 * dim].iter().map(|&x| x as f32).collect::<Vec<_>>());
    }
    let p = dir.path().join("c.i8bin");
    let mut w = VectorWriter::<i8>::create(&p, dim).unwrap();
    w.append(&s).unwrap();
    w.finish().unwrap();
    assert_eq!(VectorFile::open(&p).unwrap().read_all::<i8>().unwrap(), s);
}

/// A writer dropped before finish leaves no file behind, under either name.
#[test]
fn unfinished_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.fbin");
    let mut w = VectorWriter::<f32>::create(&p, 4).unwrap();
    w.append(&[1.0; 8]).unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Every malformed input is an error naming the file and the problem.
#[test]
fn bad_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Unknown extension.
    let p = write_bytes(d, "x.txt", &[0; 16]);
    assert!(err_text(VectorFile::open(&p)).contains("unknown vector file extension"));
    // Too short for a header.
    let p = write_bytes(d, "short.fbin", &[1, 0, 0]);
    let e = err_text(VectorFile::open(&p));
    assert!(e.contains("short.fbin") && e.contains("too short"), "{e}");
    // Zero dimension.
    let p = write_bytes(d, "zero.fbin", &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert!(err_text(VectorFile::open(&p)).contains("dimension is zero"));
    // Header and size disagree (truncated last row).
    let mut b = vec![2, 0, 0, 0, 3, 0, 0, 0];
    b.extend_from_slice(&[0u8; 4 * 5]);
    let p = write_bytes(d, "trunc.fbin", &b);
    let e = err_text(VectorFile::open(&p));
    assert!(e.contains("header says 2 rows") && e.contains("trunc.fbin"), "{e}");
    // vecs with a truncated row.
    let mut b = 3i32.to_le_bytes().to_vec();
    b.extend_from_slice(&[0u8; 12]);
    b.extend_from_slice(&3i32.to_le_bytes());
    b.extend_from_slice(&[0u8; 8]);
    let p = write_bytes(d, "t.fvecs", &b);
    assert!(err_text(VectorFile::open(&p)).contains("not a multiple"));
    // vecs with a row of another dimension, found when the row is read.
    let mut b = Vec::new();
    for dim in [2i32, 2, 2] {
        b.extend_from_slice(&dim.to_le_bytes());
        b.extend_from_slice(&[0u8; 2]);
    }
    b[6..10].copy_from_slice(&5i32.to_le_bytes());
    let p = write_bytes(d, "m.bvecs", &b);
    let vf = VectorFile::open(&p).unwrap();
    let mut out = Vec::<u8>::new();
    assert!(err_text(vf.read_rows(0, 3, &mut out)).contains("row 1 declares dimension 5"));
    // Empty vecs file.
    let p = write_bytes(d, "e.fvecs", &[]);
    assert!(err_text(VectorFile::open(&p)).contains("no row"));
    // Negative dimension.
    let p = write_bytes(d, "neg.fvecs", &(-1i32).to_le_bytes());
    assert!(err_text(VectorFile::open(&p)).contains("dimension -1"));
    // Wrong element type requested, out-of-range rows.
    let p = d.join("ok.fbin");
    let mut w = VectorWriter::<f32>::create(&p, 2).unwrap();
    w.append(&[1.0, 2.0]).unwrap();
    w.finish().unwrap();
    let vf = VectorFile::open(&p).unwrap();
    let mut out = Vec::<u8>::new();
    assert!(err_text(vf.read_rows(0, 1, &mut out)).contains("holds f32"));
    let mut out = Vec::<f32>::new();
    assert!(err_text(vf.read_rows(0, 2, &mut out)).contains("out of range"));
    // Missing file.
    assert!(err_text(VectorFile::open(&d.join("nope.fbin"))).contains("nope.fbin"));
}

/// Ground truth round-trips with and without scores, and bad sizes are errors.
#[test]
fn ground_truth_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gt = GroundTruth { n: 2, k: 3, ids: vec![1, 2, 3, 4, 5, 6], scores: Some(vec![0.5; 6]) };
    let p = dir.path().join("g.ibin");
    write_ground_truth(&p, &gt).unwrap();
    assert_eq!(read_ground_truth(&p).unwrap(), gt);
    let ids_only = GroundTruth { scores: None, ..gt.clone() };
    write_ground_truth(&p, &ids_only).unwrap();
    assert_eq!(read_ground_truth(&p).unwrap(), ids_only);
    // ivecs
    let mut b = Vec::new();
    for r in 0..2u32 {
        b.extend_from_slice(&3i32.to_le_bytes());
        for j in 0..3u32 {
            b.extend_from_slice(&(r * 3 + j + 1).to_le_bytes());
        }
    }
    let p = write_bytes(dir.path(), "g.ivecs", &b);
    assert_eq!(read_ground_truth(&p).unwrap(), ids_only);
    // Size disagrees with header.
    let mut bytes = std::fs::read(dir.path().join("g.ibin")).unwrap();
    bytes.pop();
    let p = write_bytes(dir.path(), "bad.ibin", &bytes);
    assert!(err_text(read_ground_truth(&p)).contains("header says 2 queries"));
    let p = write_bytes(dir.path(), "k0.ibin", &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert!(err_text(read_ground_truth(&p)).contains("k (neighbours per query) is zero"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Arbitrary bytes under every extension open as a valid file or give an
    /// error, and reading every row of what opens never panics.
    #[test]
    fn arbitrary_files_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        for ext in ["fbin", "u8bin", "i8bin", "fvecs", "bvecs", "ibin", "ivecs"] {
            let p = write_bytes(dir.path(), &format!("x.{ext}"), &bytes);
            if let Ok(vf) = VectorFile::open(&p) {
                let mut out = Vec::new();
                let _ = vf.read_rows_f32(0, vf.len() as usize, &mut out);
            }
            let _ = read_ground_truth(&p);
        }
    }
}

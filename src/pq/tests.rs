use super::*;
use crate::synth::{Mixture, STREAM_BASE, STREAM_QUERIES};

/// `n` rows of a seeded `dim`-d Gaussian mixture with 16 clusters.
fn mixture(dim: usize, n: usize, stream: u64) -> Vec<f32> {
    Mixture::new(dim, 16, 11).unwrap().block::<f32>(11, stream, 0, n)
}

fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn train(sample: &[f32], dim: usize, chunks: usize) -> Codebook {
    Codebook::train(sample, dim, &PqParams::new(chunks, 5)).unwrap()
}

fn encode_all(cb: &Codebook, rows: &[f32]) -> Vec<u8> {
    let mut codes = vec![0u8; rows.len() / cb.dim() * cb.chunks()];
    cb.encode_batch(rows, &mut codes);
    codes
}

/// Reconstruction MSE over the mean squared norm around the centroid.
fn relative_error(cb: &Codebook, rows: &[f32]) -> f64 {
    let dim = cb.dim();
    let codes = encode_all(cb, rows);
    let mut back = vec![0f32; dim];
    let (mut err, mut spread) = (0f64, 0f64);
    for (row, code) in rows.chunks_exact(dim).zip(codes.chunks_exact(cb.chunks())) {
        cb.decode(code, &mut back);
        err += f64::from(l2_squared(row, &back));
        spread += f64::from(l2_squared(row, cb.centroid()));
    }
    err / spread
}

// On a seeded 32-d mixture at M = dim/4 = 8 the reconstruction MSE stays under 0.05 of the spread (measured 0.021).
#[test]
fn reconstruction_error_is_small() {
    let (dim, n) = (32, 4000);
    let rows = mixture(dim, n, STREAM_BASE);
    let cb = train(&rows, dim, dim / 4);
    let rel = relative_error(&cb, &rows);
    eprintln!("relative reconstruction error at M=8: {rel:.4}");
    assert!(rel < 0.05, "relative error {rel}");
    // Twice the bytes per code: M = 16 (measured 0.0036).
    let rel16 = relative_error(&train(&rows, dim, 16), &rows);
    eprintln!("relative reconstruction error at M=16: {rel16:.4}");
    assert!(rel16 < 0.01 && rel16 < rel, "relative error {rel16} at M=16");
}

// LookupTable::distance equals the exact l2 / negated ip between the query and decode(code).
#[test]
fn lookup_table_matches_decoded_distance() {
    let (dim, n) = (24, 1500);
    let rows = mixture(dim, n, STREAM_BASE);
    let queries = mixture(dim, 20, STREAM_QUERIES);
    // 24 dims in 7 chunks: widths 4,4,4,3,3,3,3 and a 7th chunk left over
    // from the unroll by 4, so both the unrolled and the tail path run.
    let cb = train(&rows, dim, 7);
    let codes = encode_all(&cb, &rows);
    let mut back = vec![0f32; dim];
    let mut lut = LookupTable::default();
    for q in queries.chunks_exact(dim) {
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
            cb.fill_lookup_table(q, metric, &mut lut);
            for code in codes.chunks_exact(cb.chunks()).take(200) {
                cb.decode(code, &mut back);
                let exact = match metric {
                    Metric::L2 => l2_squared(q, &back),
                    _ => -dot(q, &back),
                };
                let got = lut.distance(code);
                assert!(
                    (got - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                    "{metric}: table {got} vs exact {exact}"
                );
            }
        }
    }
}

// distance_batch scores node ids from a flat codes array exactly as distance does row by row.
#[test]
fn distance_batch_matches_distance() {
    let dim = 16;
    let rows = mixture(dim, 600, STREAM_BASE);
    let cb = train(&rows, dim, 8);
    let codes = encode_all(&cb, &rows);
    let lut = cb.lookup_table(&rows[..dim], Metric::L2);
    let ids: Vec<u32> = (0..600).rev().step_by(7).collect();
    let mut out = vec![0f32; ids.len()];
    lut.distance_batch(&codes, &ids, &mut out);
    for (&id, &d) in ids.iter().zip(&out) {
        assert_eq!(d, lut.distance(&codes[id as usize * 8..(id as usize + 1) * 8]));
    }
}

// PQ-only ranking (5K points, 32-d, M=16, 100 queries): the true nearest neighbour is in the PQ
// top-10 for >= 0.95 of queries (measured 1.00), is the PQ top-1 for >= 0.65 (measured 0.78), and
// the PQ top-10 overlaps the exact top-10 by >= 0.78 (10-recall@10, measured 0.868).
#[test]
fn pq_ranking_recall() {
    let (dim, n, nq, chunks) = (32, 5000, 100, 16);
    let base = mixture(dim, n, STREAM_BASE);
    let queries = mixture(dim, nq, STREAM_QUERIES);
    let cb = train(&base, dim, chunks);
    let codes = encode_all(&cb, &base);
    let top10 = |scores: Vec<f32>| {
        let mut ranked: Vec<(f32, usize)> = scores.into_iter().zip(0..).collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        ranked[..10].iter().map(|r| r.1).collect::<Vec<usize>>()
    };
    let (mut in_top10, mut top1, mut overlap) = (0, 0, 0);
    for q in queries.chunks_exact(dim) {
        let exact = top10(base.chunks_exact(dim).map(|row| l2_squared(q, row)).collect());
        let lut = cb.lookup_table(q, Metric::L2);
        let approx = top10(codes.chunks_exact(chunks).map(|c| lut.distance(c)).collect());
        in_top10 += usize::from(approx.contains(&exact[0]));
        top1 += usize::from(approx[0] == exact[0]);
        overlap += approx.iter().filter(|id| exact.contains(id)).count();
    }
    let in_top10 = in_top10 as f64 / nq as f64;
    let top1 = top1 as f64 / nq as f64;
    let recall10 = overlap as f64 / (10 * nq) as f64;
    eprintln!("PQ-only: NN in top-10 {in_top10:.2}, top-1 {top1:.2}, 10-recall@10 {recall10:.3}");
    assert!(in_top10 >= 0.95, "NN in PQ top-10 for {in_top10}");
    assert!(top1 >= 0.65, "PQ top-1 is the NN for {top1}");
    assert!(recall10 >= 0.78, "10-recall@10 {recall10}");
}

// Training gives bit-identical codebooks on 1 and 2 threads, and with the same seed twice.
#[test]
fn training_is_deterministic_across_thread_counts() {
    let dim = 12;
    let rows = mixture(dim, 1200, STREAM_BASE);
    let params = PqParams { sample_max: 1000, ..PqParams::new(5, 77) };
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| Codebook::train(&rows, dim, &params).unwrap())
    };
    let a = run(1);
    assert_eq!(a, run(2));
    assert_eq!(a, run(2));
    let other = Codebook::train(&rows, dim, &PqParams { seed: 78, ..params.clone() }).unwrap();
    assert_ne!(a, other);
}

// dim = 10 in M = 3 chunks gives widths 4,3,3, and encode/decode work over the uneven split.
#[test]
fn uneven_chunks() {
    assert_eq!(chunk_offsets(10, 3), vec![0, 4, 7, 10]);
    assert_eq!(chunk_offsets(8, 8), (0..=8).collect::<Vec<u32>>());
    assert_eq!(chunk_offsets(7, 1), vec![0, 7]);
    let rows = mixture(10, 800, STREAM_BASE);
    let cb = train(&rows, 10, 3);
    assert_eq!(cb.chunk_offsets(), &[0, 4, 7, 10]);
    assert_eq!(cb.chunk_centers(0).len(), 256 * 4);
    assert_eq!(cb.chunk_centers(2).len(), 256 * 3);
    assert_eq!(cb.centers().len(), 256 * 10);
    assert!(relative_error(&cb, &rows) < 0.5);
}

// A sample with fewer rows than 256 centres (even a single row) still trains, and encodes it exactly.
#[test]
fn tiny_samples_train() {
    let rows = mixture(6, 40, STREAM_BASE);
    let cb = train(&rows, 6, 3);
    assert!(relative_error(&cb, &rows) < 1e-6);
    let one = train(&rows[..6], 6, 2);
    assert_eq!(one.centroid(), &rows[..6]);
}

// encode_batch on u8 rows equals encode of the same rows converted to f32.
#[test]
fn encode_batch_converts_elements() {
    let dim = 8;
    let rows: Vec<u8> = Mixture::new(dim, 4, 3).unwrap().block::<u8>(3, STREAM_BASE, 0, 700);
    let as_f32: Vec<f32> = rows.iter().map(|&v| f32::from(v)).collect();
    let cb = train(&as_f32, dim, 4);
    let mut batch = vec![0u8; 700 * 4];
    cb.encode_batch(&rows, &mut batch);
    let mut one = [0u8; 4];
    for (row, code) in as_f32.chunks_exact(dim).zip(batch.chunks_exact(4)) {
        cb.encode(row, &mut one);
        assert_eq!(&one, code);
    }
}

// Bad parameters and data are errors with clear messages, never panics.
#[test]
fn training_errors() {
    let rows = vec![0.5f32; 384 * 4];
    let err = Codebook::train(&rows, 384, &PqParams::new(400, 1)).unwrap_err();
    assert_eq!(err.to_string(), "pq-bytes 400 exceeds dimension 384");
    assert_eq!(Codebook::train(&rows, 384, &PqParams::new(0, 1)).unwrap_err(), PqError::NoChunks);
    assert_eq!(Codebook::train(&[], 384, &PqParams::new(8, 1)).unwrap_err(), PqError::EmptySample);
    assert_eq!(
        Codebook::train(&rows[..10], 384, &PqParams::new(8, 1)).unwrap_err(),
        PqError::RaggedSample { len: 10, dim: 384 }
    );
    assert!(matches!(
        Codebook::train(&rows, 0, &PqParams::new(1, 1)),
        Err(PqError::Dimension { .. })
    ));
    let mut bad = rows.clone();
    bad[384 + 3] = f32::NAN;
    let err = Codebook::train(&bad, 384, &PqParams::new(8, 1)).unwrap_err();
    assert!(matches!(err, PqError::NonFinite { row: 1, column: 3, .. }), "{err}");
    bad[384 + 3] = f32::INFINITY;
    assert!(Codebook::train(&bad, 384, &PqParams::new(8, 1)).is_err());
    let zero_iters = PqParams { iters_max: 0, ..PqParams::new(8, 1) };
    assert!(matches!(Codebook::train(&rows, 384, &zero_iters), Err(PqError::Iterations { .. })));
    let zero_sample = PqParams { sample_max: 0, ..PqParams::new(8, 1) };
    assert!(matches!(Codebook::train(&rows, 384, &zero_sample), Err(PqError::SampleMax { .. })));
}

// from_parts rejects offsets that do not tile 0..dim, wrong lengths and non-finite values.
#[test]
fn from_parts_validates() {
    let ok = |offsets: Vec<u32>| Codebook::from_parts(4, offsets, vec![0.0; 4], vec![0.0; 1024]);
    assert!(ok(vec![0, 2, 4]).is_ok());
    assert!(ok(vec![0, 4]).is_ok());
    assert!(ok(vec![0]).is_err());
    assert!(ok(vec![1, 2, 4]).is_err());
    assert!(ok(vec![0, 2, 2, 4]).is_err());
    assert!(ok(vec![0, 3, 2, 4]).is_err());
    assert!(ok(vec![0, 2, 5]).is_err());
    assert!(Codebook::from_parts(4, vec![0, 4], vec![0.0; 3], vec![0.0; 1024]).is_err());
    assert!(Codebook::from_parts(4, vec![0, 4], vec![0.0; 4], vec![0.0; 1023]).is_err());
    let mut centers = vec![0.0; 1024];
    centers[9] = f32::NAN;
    assert!(Codebook::from_parts(4, vec![0, 4], vec![0.0; 4], centers).is_err());
}

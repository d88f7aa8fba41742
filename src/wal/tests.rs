//! The WAL against its promises: records come back as written across
//! segments; a tail cut at any byte is cut and nothing before it is lost; a
//! flipped byte before the tail stops the open naming segment and offset; a
//! failed sync poisons the log; concurrent writers share syncs; and power
//! losses at random moments (1,000 seeds, simulated file layer) never lose
//! an acknowledged record nor serve a corrupt one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn dir() -> PathBuf {
    PathBuf::from("/sim/wal")
}

fn small() -> WalOptions {
    WalOptions { durability: Durability::Fsync, segment_bytes_max: 600 }
}

fn open(fs: &SimFs, opts: WalOptions) -> Result<(Wal, Recovery, Vec<Record>), WalError> {
    let mut got = Vec::new();
    let (w, r) = Wal::open(Arc::new(fs.clone()), &dir(), opts, 0, |rec| {
        got.push(rec);
        Ok(())
    })?;
    Ok((w, r, got))
}

fn body(i: u64) -> Vec<u8> {
    (0..(i * 37 % 90) as usize).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn kind(i: u64) -> RecordKind {
    if i.is_multiple_of(5) { RecordKind::DeleteBatch } else { RecordKind::UpsertBatch }
}

fn write_n(w: &Wal, from: u64, n: u64) {
    for i in from..from + n {
        assert_eq!(w.append(kind(i), &body(i)).unwrap(), i);
    }
}

fn check(records: &[Record], n: u64) {
    assert_eq!(records.len() as u64, n);
    for (i, r) in records.iter().enumerate() {
        let lsn = i as u64 + 1;
        assert_eq!((r.lsn, r.kind, &r.body), (lsn, kind(lsn), &body(lsn)), "record {lsn}");
    }
}

fn last_segment(fs: &SimFs) -> PathBuf {
    let mut names = fs.list(&dir()).unwrap();
    names.sort();
    dir().join(names.last().unwrap())
}

// Records come back in order with their kinds and bodies, across several
// segments, and appends go on after a reopen.
#[test]
fn records_round_trip_across_segments() {
    let fs = SimFs::new();
    let (w, r, got) = open(&fs, small()).unwrap();
    assert_eq!((r.records, got.len()), (0, 0));
    write_n(&w, 1, 40);
    assert!(w.segments().len() >= 3, "{:?}", w.segments());
    drop(w);
    let (w, r, got) = open(&fs, small()).unwrap();
    assert_eq!((r.records, r.last_lsn, r.torn_tail.clone()), (40, 40, None));
    check(&got, 40);
    write_n(&w, 41, 10);
    drop(w);
    let (_, _, got) = open(&fs, small()).unwrap();
    check(&got, 50);
    // Replay from an LSN skips what a generation already holds.
    let mut after = Vec::new();
    Wal::open(Arc::new(fs.clone()), &dir(), small(), 45, |r| {
        after.push(r.lsn);
        Ok(())
    })
    .unwrap();
    assert_eq!(after, (46..=50).collect::<Vec<_>>());
}

// The last segment cut at every byte of its last records: the cut record and
// what follows are dropped and reported, every record before it comes back,
// and the log goes on from there.
#[test]
fn tail_cut_at_every_byte_loses_only_the_tail() {
    let fs = SimFs::new();
    let opts = WalOptions { segment_bytes_max: 1 << 20, ..small() };
    let (w, _, _) = open(&fs, opts.clone()).unwrap();
    write_n(&w, 1, 12);
    drop(w);
    let seg = last_segment(&fs);
    let full = fs.contents(&seg).unwrap();
    // Offsets where records 9.. start.
    let mut starts = vec![SEGMENT_HEADER_BYTES];
    for i in 1..=12u64 {
        starts.push(starts.last().unwrap() + RECORD_HEADER_BYTES + body(i).len());
    }
    for cut in starts[8]..full.len() {
        let fs = SimFs::new();
        fs.set_contents(&seg, full[..cut].to_vec());
        let (w, r, got) = open(&fs, opts.clone()).unwrap();
        let whole = starts.iter().filter(|&&s| s <= cut).count() as u64 - 1;
        check(&got, whole);
        let torn = cut - starts[whole as usize];
        assert_eq!(
            r.torn_tail.as_ref().map(|t| t.2),
            (torn > 0).then_some(torn as u64),
            "cut {cut}"
        );
        assert_eq!(fs.contents(&seg).unwrap().len(), starts[whole as usize], "tail truncated");
        assert_eq!(w.append(kind(whole + 1), &body(whole + 1)).unwrap(), whole + 1);
    }
}

// A flipped byte before the tail (in any record but the last, or in a full
// segment) stops the open with an error naming the segment and the offset of
// the bad record.
#[test]
fn flipped_byte_mid_log_refuses_the_open() {
    let fs = SimFs::new();
    let (w, _, _) = open(&fs, small()).unwrap();
    write_n(&w, 1, 30);
    drop(w);
    let mut names = fs.list(&dir()).unwrap();
    names.sort();
    let first = dir().join(&names[0]);
    let good = fs.contents(&first).unwrap();
    for at in [SEGMENT_HEADER_BYTES + 3, SEGMENT_HEADER_BYTES + 12, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x08;
        fs.set_contents(&first, bad);
        let e = open(&fs, small()).err().expect("must refuse").to_string();
        assert!(e.contains(&names[0]) && e.contains("byte offset"), "{e}");
        fs.set_contents(&first, good.clone());
    }
    // In the last segment, a bad record followed by a valid one is corruption too.
    let last = last_segment(&fs);
    let lb = fs.contents(&last).unwrap();
    let mut bad = lb.clone();
    bad[SEGMENT_HEADER_BYTES + 2] ^= 0x01;
    fs.set_contents(&last, bad);
    let e = open(&fs, small()).err().expect("must refuse").to_string();
    assert!(e.contains(&format!("offset {SEGMENT_HEADER_BYTES}")), "{e}");
}

// A failed fdatasync poisons the log: that append and every later one fail,
// nothing after the failure is acknowledged, and a reopen works again.
#[test]
fn failed_sync_poisons_the_log() {
    let fs = SimFs::new();
    let (w, _, _) = open(&fs, small()).unwrap();
    write_n(&w, 1, 5);
    fs.fail_sync_in(0);
    assert!(w.append(RecordKind::UpsertBatch, b"lost").is_err());
    let e = w.append(RecordKind::UpsertBatch, b"refused").unwrap_err();
    assert!(matches!(e, WalError::Poisoned(_)), "{e}");
    assert!(w.poisoned().is_some());
    assert_eq!(w.last_lsn(), 5);
    drop(w);
    let (w, r, _) = open(&fs, small()).unwrap();
    assert!(r.last_lsn >= 5);
    assert!(w.append(RecordKind::UpsertBatch, b"after reopen").is_ok());
}

// Writers on several threads share flushes: far fewer syncs than appends,
// every append acknowledged, and all records come back.
#[test]
fn concurrent_writers_share_syncs() {
    let fs = SimFs::new();
    let (w, _, _) = open(&fs, WalOptions::default()).unwrap();
    let before = fs.syncs();
    let w = Arc::new(w);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    w.append(RecordKind::UpsertBatch, &(t * 1000 + i).to_le_bytes()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = fs.syncs() - before;
    assert_eq!(w.last_lsn(), 1600);
    drop(w);
    let (_, r, got) = open(&fs, WalOptions::default()).unwrap();
    assert_eq!((r.last_lsn, got.len()), (1600, 1600));
    let mut seen: Vec<u32> =
        got.iter().map(|r| u32::from_le_bytes(r.body[..4].try_into().unwrap())).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 1600);
    eprintln!("1600 appends from 8 threads took {syncs} syncs");
    assert!(syncs <= 1600, "{syncs}");
}

// Power losses at random moments, 1,000 seeds: writers (one to three
// threads) append until the disk starts failing at a random operation, then
// power is lost, keeping a random prefix of each file's unsynced bytes.
// After reopening, every acknowledged record is there with its body, LSNs
// run without a gap, and nothing else is invented.
#[test]
fn power_loss_at_random_moments_loses_no_acknowledged_record() {
    for seed in 0..1000u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let fs = SimFs::new();
        let opts = WalOptions { segment_bytes_max: rng.random_range(200..2000), ..small() };
        let (w, _, _) = open(&fs, opts.clone()).unwrap();
        fs.fail_after(rng.random_range(0..300));
        let writers = rng.random_range(1..=3u64);
        let w = Arc::new(w);
        let acked: Vec<Vec<(Lsn, Vec<u8>)>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..writers)
                .map(|t| {
                    let w = Arc::clone(&w);
                    s.spawn(move || {
                        let mut acked = Vec::new();
                        for i in 0..200u64 {
                            let b = body(seed * 7 + t * 1000 + i);
                            match w.append(RecordKind::UpsertBatch, &b) {
                                Ok(lsn) => acked.push((lsn, b)),
                                Err(_) => break,
                            }
                        }
                        acked
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        drop(w);
        fs.power_loss(|pending| rng.random_range(0..=pending));
        let (w, r, got) = open(&fs, opts.clone()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for (i, rec) in got.iter().enumerate() {
            assert_eq!(rec.lsn, i as u64 + 1, "seed {seed}: LSNs without gaps");
        }
        for (lsn, b) in acked.iter().flatten() {
            let rec = got.get(*lsn as usize - 1).unwrap_or_else(|| {
                panic!("seed {seed}: acknowledged lsn {lsn} lost (recovered {})", r.last_lsn)
            });
            assert_eq!(&rec.body, b, "seed {seed}: lsn {lsn}");
        }
        // The log takes writes again after the loss.
        assert_eq!(w.append(RecordKind::DeleteBatch, b"x").unwrap(), r.last_lsn + 1, "seed {seed}");
    }
}

// Segments wholly below an LSN go, except the current one and any the
// retention hook keeps; the rest still replays.
#[test]
fn old_segments_are_removed_unless_retained() {
    let fs = SimFs::new();
    let (w, _, _) = open(&fs, small()).unwrap();
    write_n(&w, 1, 40);
    let segs = w.segments();
    assert!(segs.len() >= 4);
    let keep = segs[1];
    let removed = w.remove_before(segs[3] - 1, |f| f == keep).unwrap();
    assert_eq!(removed, vec![segs[0]], "a kept segment stops the removal");
    let removed = w.remove_before(segs[3] - 1, |_| false).unwrap();
    assert_eq!(removed, vec![segs[1], segs[2]]);
    assert_eq!(w.segments()[0], segs[3]);
    assert!(w.remove_before(0, |_| false).unwrap().is_empty());
    drop(w);
    // What is left replays from its first LSN.
    let mut lsns = Vec::new();
    Wal::open(Arc::new(fs.clone()), &dir(), small(), 0, |r| {
        lsns.push(r.lsn);
        Ok(())
    })
    .unwrap();
    assert_eq!(lsns, (segs[3]..=40).collect::<Vec<_>>());
    let _ = Path::new("");
}

// The real file layer: records written, a torn tail appended by hand, and a
// reopen that cuts it on disk and keeps every record before it.
#[test]
fn real_files_round_trip_and_cut_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("wal");
    let opts = WalOptions { segment_bytes_max: 500, ..Default::default() };
    let (w, _) = Wal::open(Arc::new(RealFs), &d, opts.clone(), 0, |_| Ok(())).unwrap();
    write_n(&w, 1, 25);
    drop(w);
    let mut names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let last = names.last().unwrap().clone();
    let len = std::fs::metadata(&last).unwrap().len();
    let mut partial = Vec::new();
    encode_record(26, RecordKind::UpsertBatch, b"never acknowledged", &mut partial);
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&partial[..15])
        .unwrap();
    let mut got = Vec::new();
    let (_, r) = Wal::open(Arc::new(RealFs), &d, opts, 0, |rec| {
        got.push(rec);
        Ok(())
    })
    .unwrap();
    check(&got, 25);
    assert_eq!(r.torn_tail.map(|t| (t.1, t.2)), Some((len, 15)));
    assert_eq!(std::fs::metadata(&last).unwrap().len(), len);
}

/// The shipper's reader follows a real log as it grows and rolls, from any
/// LSN, returns only records up to the durable LSN it is given, and a
/// standby's copy made with `append_replicated` holds the same records.
#[test]
fn reader_follows_a_growing_log_and_a_copy_matches() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (src, copy) = (tmp.path().join("src"), tmp.path().join("copy"));
    let opts = WalOptions { durability: Durability::Fsync, segment_bytes_max: 700 };
    let (w, _) = Wal::open(Arc::new(RealFs), &src, opts.clone(), 0, |_| Ok(())).expect("open");
    write_n(&w, 1, 40);
    assert!(w.segments().len() > 3, "several segments");
    // From every LSN, in pieces of any size, capped at the durable LSN.
    for from in [1u64, 2, 17, 40, 41] {
        let mut r = WalReader::open(&src, from).expect("reader").expect("holds the lsn");
        let mut got = Vec::new();
        loop {
            let part = r.read(35, 100).expect("read");
            if part.is_empty() {
                break;
            }
            got.extend(part);
        }
        let want: Vec<u64> = (from..=35).collect();
        assert_eq!(got.iter().map(|r| r.lsn).collect::<Vec<_>>(), want, "from {from}");
        // No read passed 100 body bytes but by a single record.
        let mut r = WalReader::open(&src, from).expect("reader").expect("holds the lsn");
        loop {
            let part = r.read(35, 100).expect("read");
            if part.is_empty() {
                break;
            }
            let bytes: usize = part.iter().map(|r| r.body.len()).sum();
            assert!(part.len() == 1 || bytes <= 100, "{} records, {bytes} bytes", part.len());
        }
        for rec in &got {
            assert_eq!((rec.kind, &rec.body), (kind(rec.lsn), &body(rec.lsn)));
        }
    }
    // A reader at the end picks up records appended later, across a roll.
    let mut r = WalReader::open(&src, 41).expect("reader").expect("at the end");
    assert!(r.read(40, 1 << 20).expect("read").is_empty());
    write_n(&w, 41, 20);
    let mut got = Vec::new();
    while got.len() < 20 {
        let part = r.read(w.last_lsn(), 1 << 20).expect("read");
        assert!(!part.is_empty(), "records 41..=60 are there");
        got.extend(part);
    }
    assert_eq!(got.first().map(|r| r.lsn), Some(41));
    // The copy: same records, same LSNs; a gap is refused.
    let (c, _) = Wal::open(Arc::new(RealFs), &copy, opts.clone(), 0, |_| Ok(())).expect("copy");
    let mut all = WalReader::open(&src, 1).expect("reader").expect("from 1").read(60, usize::MAX);
    let all = all.as_mut().expect("read");
    assert_eq!(c.append_replicated(&all[..30]).expect("append"), 30);
    assert!(matches!(
        c.append_replicated(&all[31..32]),
        Err(WalError::Sequence { got: 32, want: 31 })
    ));
    assert_eq!(c.append_replicated(&all[30..]).expect("append"), 60);
    drop(c);
    let mut replayed = Vec::new();
    Wal::open(Arc::new(RealFs), &copy, opts, 0, |r| {
        replayed.push(r);
        Ok(())
    })
    .expect("reopen");
    assert_eq!(&replayed, all);
    // A log trimmed past an LSN says it no longer holds it.
    let firsts = w.segments();
    w.remove_before(firsts[2] - 1, |_| false).expect("trim");
    assert!(WalReader::open(&src, 1).expect("reader").is_none());
    assert!(WalReader::open(&src, firsts[2]).expect("reader").is_some());
}

//! Both sector readers against a patterned file: data, errors, limits, fallback.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::uring;
use super::*;

const FILE_SECTORS: u64 = 64;
const BATCH_MAX: usize = 16;
const SPAN_MAX: u32 = 4;

/// The byte at position `j` of sector `s`: differs between sectors and
/// within a sector, so a read from the wrong place cannot pass.
fn pattern(s: u64, j: usize) -> u8 {
    (s.wrapping_mul(131) as usize ^ j.wrapping_mul(7) ^ (j >> 8)) as u8
}

/// Writes `sectors` patterned sectors plus `tail` extra bytes to `dir/graph`.
fn patterned_file(dir: &Path, sectors: u64, tail: usize) -> PathBuf {
    let mut bytes = Vec::with_capacity(sectors as usize * SECTOR_BYTES + tail);
    for s in 0..=sectors {
        let n = if s == sectors { tail } else { SECTOR_BYTES };
        bytes.extend((0..n).map(|j| pattern(s, j)));
    }
    let path = dir.join("graph");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open(path: &Path) -> Arc<File> {
    let (file, direct) = open_direct(path).unwrap();
    // /tmp is ext4 here: the direct path is the one under test.
    assert!(direct, "expected O_DIRECT to be accepted on {}", path.display());
    Arc::new(file)
}

fn readers(path: &Path, batch_max: usize) -> Vec<Box<dyn SectorReader>> {
    let file = open(path);
    [ReaderKind::Uring, ReaderKind::Pread]
        .into_iter()
        .map(|kind| {
            make_reader(kind, Arc::clone(&file), path.to_path_buf(), batch_max, SPAN_MAX).unwrap()
        })
        .collect()
}

fn check_data(reader: &dyn SectorReader, reqs: &[ReadRequest]) {
    for (i, req) in reqs.iter().enumerate() {
        let data = reader.data(i);
        assert_eq!(
            data.len(),
            req.sectors as usize * SECTOR_BYTES,
            "{} request {i}",
            reader.kind()
        );
        for (k, chunk) in data.chunks(SECTOR_BYTES).enumerate() {
            let s = req.offset / SECTOR_BYTES as u64 + k as u64;
            let wrong = chunk.iter().enumerate().position(|(j, &b)| b != pattern(s, j));
            assert_eq!(wrong, None, "{} request {i}: sector {s} differs", reader.kind());
        }
    }
}

fn random_batch(rng: &mut ChaCha8Rng, batch_max: usize) -> Vec<ReadRequest> {
    let n = rng.random_range(1..=batch_max);
    (0..n)
        .map(|_| {
            let sectors = rng.random_range(1..=SPAN_MAX);
            let first = rng.random_range(0..=FILE_SECTORS - u64::from(sectors));
            ReadRequest { offset: first * SECTOR_BYTES as u64, sectors }
        })
        .collect()
}

// Random batches of 1..=4-sector requests through O_DIRECT: both readers return every byte right, and the same bytes.
#[test]
fn random_batches_read_the_right_bytes_with_both_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    let mut readers = readers(&path, BATCH_MAX);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..40 {
        let reqs = random_batch(&mut rng, BATCH_MAX);
        for reader in readers.iter_mut() {
            reader.read(&reqs).unwrap();
            check_data(reader.as_ref(), &reqs);
        }
        for i in 0..reqs.len() {
            assert_eq!(readers[0].data(i), readers[1].data(i), "request {i}");
        }
    }
}

// A batch covering the whole file (including the last sector) and an empty batch both succeed.
#[test]
fn full_and_empty_batches_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    let mut readers = readers(&path, BATCH_MAX);
    let reqs: Vec<_> = (0..BATCH_MAX as u64)
        .map(|i| ReadRequest {
            offset: i * SPAN_MAX as u64 * SECTOR_BYTES as u64,
            sectors: SPAN_MAX,
        })
        .collect();
    assert_eq!(
        reqs.last().unwrap().offset / SECTOR_BYTES as u64 + u64::from(SPAN_MAX),
        FILE_SECTORS
    );
    for reader in readers.iter_mut() {
        reader.read(&reqs).unwrap();
        check_data(reader.as_ref(), &reqs);
        reader.read(&[]).unwrap();
    }
}

// A submission queue smaller than the batch, with and without registered buffers: the io_uring reader submits, then pushes the rest.
#[test]
fn uring_handles_a_full_submission_queue_and_plain_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    for register_buffers in [true, false] {
        let options = uring::RingOptions { entries: 2, register_buffers };
        let mut reader =
            UringReader::with_options(open(&path), path.clone(), BATCH_MAX, SPAN_MAX, options)
                .unwrap();
        assert!(register_buffers || !reader.registered());
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..10 {
            let reqs = random_batch(&mut rng, BATCH_MAX);
            reader.read(&reqs).unwrap();
            check_data(&reader, &reqs);
        }
        let past_eof = ReadRequest { offset: FILE_SECTORS * SECTOR_BYTES as u64, sectors: 1 };
        let reqs = [ReadRequest { offset: 0, sectors: 1 }; 5];
        let mut with_error = reqs.to_vec();
        with_error.insert(2, past_eof);
        assert!(matches!(reader.read(&with_error), Err(IoError::ShortRead { .. })));
        reader.read(&reqs).unwrap();
        check_data(&reader, &reqs);
    }
}

// Reads past the end of the file are ShortRead errors, whole or partial, and the reader works afterwards.
#[test]
fn reads_past_eof_are_short_reads() {
    let dir = tempfile::tempdir().unwrap();
    // A trailing partial sector of 100 bytes after the 64 whole ones.
    let path = patterned_file(dir.path(), FILE_SECTORS, 100);
    let sector = |s: u64| s * SECTOR_BYTES as u64;
    let good = ReadRequest { offset: sector(3), sectors: 2 };
    let cases = [
        (ReadRequest { offset: sector(FILE_SECTORS + 1), sectors: 1 }, 0),
        (ReadRequest { offset: sector(FILE_SECTORS), sectors: 1 }, 100),
        (ReadRequest { offset: sector(FILE_SECTORS - 1), sectors: 2 }, SECTOR_BYTES as u64 + 100),
    ];
    for reader in readers(&path, BATCH_MAX).iter_mut() {
        for (bad, got_expected) in cases {
            // The failing request sits among good ones, so the io_uring reader
            // must drain the others before it reports.
            let reqs = [good, bad, good, good];
            match reader.read(&reqs) {
                Err(IoError::ShortRead { offset, expected, got, .. }) => {
                    assert_eq!(
                        (offset, expected, got),
                        (bad.offset, bad.len_bytes(), got_expected)
                    );
                }
                other => panic!("{}: expected ShortRead, got {other:?}", reader.kind()),
            }
            reader.read(&[good, good]).unwrap();
            check_data(reader.as_ref(), &[good, good]);
        }
    }
}

// After a failed read, data() refuses to hand out stale bytes.
#[test]
#[should_panic(expected = "not part of the last successful read")]
fn data_after_a_failed_read_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    let mut reader = readers(&path, BATCH_MAX).remove(0);
    let req = ReadRequest { offset: 0, sectors: 1 };
    reader.read(&[req]).unwrap();
    let past_eof = ReadRequest { offset: FILE_SECTORS * SECTOR_BYTES as u64, sectors: 1 };
    assert!(reader.read(&[req, past_eof]).is_err());
    let _ = reader.data(0);
}

// Misaligned, empty, oversized, out-of-range and too-many requests are refused before any I/O.
#[test]
fn invalid_requests_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    let ok = ReadRequest { offset: 0, sectors: 1 };
    for reader in readers(&path, BATCH_MAX).iter_mut() {
        let kind = reader.kind();
        let misaligned = reader.read(&[ok, ReadRequest { offset: 4095, sectors: 1 }]);
        assert!(
            matches!(misaligned, Err(IoError::Misaligned { offset: 4095, len: 4096 })),
            "{kind}"
        );
        let empty = reader.read(&[ReadRequest { offset: 0, sectors: 0 }]);
        assert!(matches!(empty, Err(IoError::RequestSize { index: 0, sectors: 0, .. })), "{kind}");
        let long = reader.read(&[ok, ReadRequest { offset: 0, sectors: SPAN_MAX + 1 }]);
        assert!(matches!(long, Err(IoError::RequestSize { index: 1, .. })), "{kind}");
        let far = reader.read(&[ReadRequest { offset: u64::MAX - 4095, sectors: 1 }]);
        assert!(matches!(far, Err(IoError::OffsetRange { index: 0, .. })), "{kind}");
        let many = reader.read(&vec![ok; BATCH_MAX + 1]);
        assert!(
            matches!(many, Err(IoError::BatchTooLarge { requested, max: BATCH_MAX }) if requested == BATCH_MAX + 1),
            "{kind}"
        );
        reader.read(&[ok]).unwrap();
        check_data(reader.as_ref(), &[ok]);
    }
}

// Constructor limits are checked for both kinds: zero or oversized batch and span.
#[test]
fn invalid_configurations_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), 1, 0);
    let file = open(&path);
    for kind in [ReaderKind::Uring, ReaderKind::Pread] {
        for (batch_max, span) in [
            (0, 1),
            (REQUESTS_PER_BATCH_MAX + 1, 1),
            (1, 0),
            (1, SECTORS_PER_REQUEST_MAX + 1),
            (REQUESTS_PER_BATCH_MAX, SECTORS_PER_REQUEST_MAX),
        ] {
            let made = make_reader(kind, Arc::clone(&file), path.clone(), batch_max, span);
            assert!(matches!(made, Err(IoError::Config { .. })), "{kind} {batch_max} {span}");
        }
    }
}

// On this machine (Linux 6.x, io_uring enabled) the Uring kind really gets a ring; prints whether buffers registered.
#[test]
fn uring_is_available_here() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), 1, 0);
    let file = open(&path);
    let (reader, why) =
        make_reader_auto(ReaderKind::Uring, Arc::clone(&file), path.clone(), 64, 8).unwrap();
    assert_eq!(reader.kind(), ReaderKind::Uring, "fell back: {why:?}");
    assert!(why.is_none());
    let uring = UringReader::new(file, path, 64, 8).unwrap();
    eprintln!(
        "io_uring: buffers registered: {} ({:?}), file registered: {}",
        uring.registered(),
        uring.registration_error(),
        uring.file_registered()
    );
}

// A ring setup failure (simulated ENOSYS) falls back to pread with the reason; other errors do not.
#[test]
fn uring_setup_failure_falls_back_to_pread() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    let file = open(&path);
    let enosys = |_: Arc<File>, _: PathBuf| -> Result<Box<dyn SectorReader>, IoError> {
        Err(IoError::Setup {
            what: "create an io_uring",
            source: io::Error::from_raw_os_error(libc::ENOSYS),
        })
    };
    let (mut reader, why) =
        make_reader_auto_with(ReaderKind::Uring, Arc::clone(&file), path.clone(), 4, 2, enosys)
            .unwrap();
    assert_eq!(reader.kind(), ReaderKind::Pread);
    let why = why.expect("a fallback reports its reason");
    assert!(why.to_string().contains("create an io_uring"), "{why}");
    let req = ReadRequest { offset: 5 * SECTOR_BYTES as u64, sectors: 2 };
    reader.read(&[req]).unwrap();
    check_data(reader.as_ref(), &[req]);

    let other = |_: Arc<File>, _: PathBuf| -> Result<Box<dyn SectorReader>, IoError> {
        Err(IoError::Config { what: "no".into() })
    };
    let made =
        make_reader_auto_with(ReaderKind::Uring, Arc::clone(&file), path.clone(), 4, 2, other);
    assert!(matches!(made, Err(IoError::Config { .. })));
    let (reader, why) = make_reader_auto(ReaderKind::Pread, file, path, 4, 2).unwrap();
    assert_eq!((reader.kind(), why.is_none()), (ReaderKind::Pread, true));
}

// A missing file is an Open error naming the path.
#[test]
fn open_direct_reports_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    match open_direct(&missing) {
        Err(IoError::Open { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("expected Open error, got {other:?}"),
    }
}

// Reader kinds parse from and print as their config names.
#[test]
fn reader_kind_round_trips_through_text() {
    for kind in [ReaderKind::Uring, ReaderKind::Pread] {
        assert_eq!(kind.to_string().parse::<ReaderKind>(), Ok(kind));
    }
    assert!("aio".parse::<ReaderKind>().is_err());
}

// Aligned buffers are sector-aligned, zeroed and writable; the empty one owns nothing.
#[test]
fn aligned_buffers_are_aligned_and_zeroed() {
    for sectors in [1, 3, 16] {
        let mut buf = AlignedBuf::zeroed(sectors * SECTOR_BYTES).unwrap();
        assert!((buf.as_ptr() as usize).is_multiple_of(SECTOR_BYTES));
        assert_eq!(buf.len(), sectors * SECTOR_BYTES);
        assert!(buf.iter().all(|&b| b == 0));
        buf[SECTOR_BYTES - 1] = 9;
        assert_eq!(buf[SECTOR_BYTES - 1], 9);
    }
    let empty = AlignedBuf::zeroed(0).unwrap();
    assert!(empty.is_empty() && (empty.as_ptr() as usize).is_multiple_of(SECTOR_BYTES));
}

// The retry state machine: short reads continue, EINTR retries, both bounded; EOF and mid-sector ends fail.
#[test]
fn transfer_retries_are_bounded() {
    let path = Path::new("graph");
    let req = ReadRequest { offset: 8192, sectors: 2 };

    let mut t = Transfer::new(&req);
    assert!(matches!(t.advance(Ok(4096), path), Step::Again));
    assert_eq!((t.next_offset(), t.remaining()), (8192 + 4096, 4096));
    assert!(matches!(t.advance(Ok(4096), path), Step::Done));

    let mut t = Transfer::new(&req);
    for _ in 0..RESUBMITS_PER_REQUEST_MAX {
        let eintr = Err(io::Error::from_raw_os_error(libc::EINTR));
        assert!(matches!(t.advance(eintr, path), Step::Again));
    }
    let eintr = Err(io::Error::from_raw_os_error(libc::EINTR));
    assert!(matches!(t.advance(eintr, path), Step::Failed(IoError::Read { offset: 8192, .. })));

    let mut t = Transfer::new(&ReadRequest { offset: 0, sectors: SECTORS_PER_REQUEST_MAX });
    for _ in 0..RESUBMITS_PER_REQUEST_MAX {
        assert!(matches!(t.advance(Ok(SECTOR_BYTES), path), Step::Again));
    }
    let last = t.advance(Ok(SECTOR_BYTES), path);
    assert!(
        matches!(last, Step::Failed(IoError::ShortRead { got, .. }) if got == 9 * SECTOR_BYTES as u64)
    );

    let mut t = Transfer::new(&req);
    assert!(matches!(t.advance(Ok(0), path), Step::Failed(IoError::ShortRead { got: 0, .. })));
    let mut t = Transfer::new(&req);
    assert!(matches!(t.advance(Ok(100), path), Step::Failed(IoError::ShortRead { got: 100, .. })));
    let mut t = Transfer::new(&req);
    let eio = Err(io::Error::from_raw_os_error(libc::EIO));
    assert!(matches!(t.advance(eio, path), Step::Failed(IoError::Read { len: 8192, .. })));
}

/// A reader over the read end of an empty pipe: its reads block in the
/// kernel until someone writes, so they stay in flight as long as a test wants.
fn pipe_reader(faults: uring::Faults) -> (UringReader, std::io::PipeWriter) {
    let (r, w) = std::io::pipe().unwrap();
    let file = Arc::new(File::from(std::os::fd::OwnedFd::from(r)));
    let mut reader = UringReader::new(file, PathBuf::from("pipe"), 4, 1).unwrap();
    reader.faults = faults;
    (reader, w)
}

type Outcome = Arc<std::sync::Mutex<Option<uring::DropOutcome>>>;

fn faults(cancel: bool, timeout_ms: u64, panic_after_submit: bool) -> (uring::Faults, Outcome) {
    let outcome: Outcome = Arc::default();
    let f = uring::Faults {
        panic_after_submit,
        no_cancel_on_drop: !cancel,
        drop_reap_timeout: Some(std::time::Duration::from_millis(timeout_ms)),
        drop_outcome: Some(Arc::clone(&outcome)),
    };
    (f, outcome)
}

const TWO_READS: [ReadRequest; 2] =
    [ReadRequest { offset: 0, sectors: 1 }, ReadRequest { offset: 0, sectors: 1 }];

// A reader dropped with reads blocked in the kernel cancels and reaps them
// before it frees its buffer, and the drop returns quickly.
#[test]
fn drop_with_reads_in_flight_cancels_and_reaps() {
    let (f, outcome) = faults(true, 5_000, false);
    let (mut reader, _w) = pipe_reader(f);
    reader.submit_only(&TWO_READS).unwrap();
    assert_eq!(reader.in_flight(), 2);
    let t = std::time::Instant::now();
    drop(reader);
    assert!(t.elapsed() < std::time::Duration::from_secs(4), "drop took {:?}", t.elapsed());
    let o = outcome.lock().unwrap().unwrap();
    assert_eq!((o.in_flight_at_drop, o.in_flight_at_end, o.leaked), (2, 0, false), "{o:?}");
}

// Without cancellation, a drop waits for reads that complete within its bound
// (data arrives on the pipe later) and frees the buffer only after reaping them.
#[test]
fn drop_waits_for_reads_that_complete() {
    let (f, outcome) = faults(false, 10_000, false);
    let (mut reader, mut w) = pipe_reader(f);
    reader.submit_only(&TWO_READS).unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(150));
        std::io::Write::write_all(&mut w, &vec![7u8; 4 * SECTOR_BYTES]).unwrap();
        w
    });
    let t = std::time::Instant::now();
    drop(reader);
    let waited = t.elapsed();
    let _w = writer.join().unwrap();
    let o = outcome.lock().unwrap().unwrap();
    assert_eq!((o.in_flight_at_drop, o.in_flight_at_end, o.leaked), (2, 0, false), "{o:?}");
    assert!(
        waited >= std::time::Duration::from_millis(100),
        "freed before the data came: {waited:?}"
    );
}

// Reads that neither complete nor get cancelled within the bound: the drop
// gives up on time and leaks the buffer instead of freeing it under the kernel.
#[test]
fn drop_leaks_the_buffer_of_reads_it_cannot_reap() {
    let before = leaked_buffer_bytes();
    let (f, outcome) = faults(false, 200, false);
    let (mut reader, _w) = pipe_reader(f);
    reader.submit_only(&TWO_READS).unwrap();
    let t = std::time::Instant::now();
    drop(reader);
    let waited = t.elapsed();
    assert!(waited >= std::time::Duration::from_millis(200), "{waited:?}");
    assert!(waited < std::time::Duration::from_secs(3), "drop hung: {waited:?}");
    let o = outcome.lock().unwrap().unwrap();
    assert_eq!((o.in_flight_at_drop, o.in_flight_at_end, o.leaked), (2, 2, true), "{o:?}");
    assert!(leaked_buffer_bytes() >= before + 4 * SECTOR_BYTES as u64);
}

// A panic that unwinds out of `read` with reads in flight: the reader dropped
// by the unwinding reaps them (file reads complete; pipe reads are cancelled)
// or, when it cannot, leaks its buffer; it never hangs.
#[test]
fn panic_with_reads_in_flight_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    let file = open(&path);
    for (use_pipe, cancel, leaked) in
        [(false, true, false), (true, true, false), (true, false, true)]
    {
        let (f, outcome) = faults(cancel, 300, true);
        let (reader, _w) = if use_pipe {
            let (r, w) = pipe_reader(f);
            (r, Some(w))
        } else {
            let mut r = UringReader::new(Arc::clone(&file), path.clone(), 4, 1).unwrap();
            r.faults = f;
            (r, None)
        };
        let t = std::time::Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut reader = reader;
            reader.read(&TWO_READS)
        }));
        assert!(result.is_err(), "the injected panic must unwind");
        assert!(t.elapsed() < std::time::Duration::from_secs(3), "unwinding hung");
        let o = outcome.lock().unwrap().unwrap();
        assert_eq!(o.in_flight_at_drop, 2, "pipe {use_pipe}: {o:?}");
        assert_eq!(o.leaked, leaked, "pipe {use_pipe} cancel {cancel}: {o:?}");
        assert_eq!(o.in_flight_at_end == 0, !leaked, "{o:?}");
    }
}

/// Checks that slot `slot` holds the bytes of `req`.
fn check_slot(reader: &dyn SectorReader, slot: usize, req: &ReadRequest) {
    let data = reader.slot(slot);
    assert_eq!(data.len(), req.sectors as usize * SECTOR_BYTES, "{} slot {slot}", reader.kind());
    for (k, chunk) in data.chunks(SECTOR_BYTES).enumerate() {
        let s = req.offset / SECTOR_BYTES as u64 + k as u64;
        let wrong = chunk.iter().enumerate().position(|(j, &b)| b != pattern(s, j));
        assert_eq!(wrong, None, "{} slot {slot}: sector {s} differs", reader.kind());
    }
}

// The pipelined interface: random reads submitted into free slots a few at a
// time, collected as they land (blocking and not), each slot's bytes checked
// before it is reused; every read comes back exactly once, and batch reads
// work between pipelined ones. With and without a spin before sleeping: a
// blocking wait returns at least one read either way.
#[test]
fn pipelined_reads_land_in_their_slots_with_both_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    let mut all = readers(&path, BATCH_MAX);
    all.extend(readers(&path, BATCH_MAX));
    for (i, reader) in all.iter_mut().enumerate() {
        let spin = std::time::Duration::from_micros(if i < 2 { 0 } else { 300 });
        reader.set_spin_wait(spin);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut free: Vec<usize> = (0..reader.slots()).collect();
        let mut issued: Vec<Option<ReadRequest>> = vec![None; reader.slots()];
        let (mut submitted, mut landed) = (0usize, 0usize);
        let mut done = Vec::new();
        while landed < 300 {
            let width = rng.random_range(1..=BATCH_MAX);
            while submitted < 300 && reader.pending() < width && !free.is_empty() {
                let slot = free.swap_remove(rng.random_range(0..free.len()));
                let req = random_batch(&mut rng, 1)[0];
                reader.submit(slot, req).unwrap();
                issued[slot] = Some(req);
                submitted += 1;
            }
            done.clear();
            let (block, pending) = (rng.random_bool(0.5), reader.pending());
            reader.wait(&mut done, block).unwrap();
            assert!(!block || pending == 0 || !done.is_empty(), "{} spin {spin:?}", reader.kind());
            for &slot in &done {
                let req = issued[slot].take().expect("a slot lands once per submission");
                check_slot(reader.as_ref(), slot, &req);
                free.push(slot);
                landed += 1;
            }
            if landed % 50 == 0 && reader.pending() == 0 {
                let reqs = random_batch(&mut rng, BATCH_MAX);
                reader.read(&reqs).unwrap();
                check_data(reader.as_ref(), &reqs);
            }
        }
        assert_eq!((submitted, landed, reader.pending()), (300, 300, 0), "{}", reader.kind());
        assert!(issued.iter().all(Option::is_none));
    }
}

// A pipelined read past the end of the file is an error (from wait, or from
// submit for pread); the reads in flight beside it are waited for and
// dropped, nothing stays pending, and the reader works afterwards.
#[test]
fn pipelined_read_errors_leave_nothing_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    let good = ReadRequest { offset: 2 * SECTOR_BYTES as u64, sectors: 2 };
    let bad = ReadRequest { offset: (FILE_SECTORS + 3) * SECTOR_BYTES as u64, sectors: 1 };
    for reader in readers(&path, BATCH_MAX).iter_mut() {
        let mut done = Vec::new();
        let mut failed = false;
        for (slot, req) in [good, good, bad, good].into_iter().enumerate() {
            if reader.submit(slot, req).is_err() {
                failed = true;
                break;
            }
        }
        while !failed && reader.pending() > 0 {
            failed = reader.wait(&mut done, true).is_err();
        }
        assert!(failed, "{}: a read past the end went unreported", reader.kind());
        // The error itself settles everything in flight.
        assert_eq!(reader.pending(), 0, "{}: reads left pending after an error", reader.kind());
        reader.discard();
        assert_eq!(reader.pending(), 0, "{}", reader.kind());
        reader.submit(5, good).unwrap();
        done.clear();
        while done.is_empty() {
            reader.wait(&mut done, true).unwrap();
        }
        assert_eq!(done, [5]);
        check_slot(reader.as_ref(), 5, &good);
        reader.read(&[good]).unwrap();
        check_data(reader.as_ref(), &[good]);
        // Bad slots and requests are refused before any I/O.
        assert!(reader.submit(BATCH_MAX, good).is_err());
        let misaligned = ReadRequest { offset: 100, sectors: 1 };
        assert!(matches!(reader.submit(0, misaligned), Err(IoError::Misaligned { .. })));
    }
}

// discard() with reads in flight waits for them: nothing pending after, the
// slots are reusable, and a batch read (which needs nothing in flight) works.
#[test]
fn discard_waits_for_reads_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    for reader in readers(&path, BATCH_MAX).iter_mut() {
        for slot in 0..BATCH_MAX {
            let req = ReadRequest { offset: slot as u64 * SECTOR_BYTES as u64, sectors: 1 };
            reader.submit(slot, req).unwrap();
        }
        reader.discard();
        assert_eq!(reader.pending(), 0, "{}", reader.kind());
        let reqs = [ReadRequest { offset: 0, sectors: 4 }];
        reader.read(&reqs).unwrap();
        check_data(reader.as_ref(), &reqs);
    }
}

// A slot whose read has not landed has no bytes to give.
#[test]
#[should_panic(expected = "has no completed read")]
fn slot_before_its_read_lands_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = patterned_file(dir.path(), FILE_SECTORS, 0);
    let reader = readers(&path, BATCH_MAX).remove(0);
    let _ = reader.slot(3);
}

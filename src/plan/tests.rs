use super::*;

fn workload(n: u64, dim: usize) -> Workload {
    Workload {
        n,
        dim,
        element: ElementType::F32,
        recall: 0.95,
        ram_bytes: 64 << 30,
        build_memory_bytes: 56 << 30,
        disk_iops: 500_000.0,
        cores: 16,
        disk_bytes: None,
        qps_target: None,
        degree_max: 64,
        pq_bytes: dim.min(32),
        cache_bytes: 0,
        delta_bytes_max: DELTA_BYTES_DEFAULT,
        wal_retention_bytes: WAL_RETENTION_BYTES_DEFAULT,
        profile: None,
    }
}

#[test]
fn builtin_calibration_has_every_role() {
    let c = Calibration::builtin();
    for role in ["fit", "pq", "partitioned", "check"] {
        assert!(c.builds.iter().any(|b| b.role == role), "no build of role {role}");
    }
    assert!(c.device.iops_qd1 > 0.0 && c.device.iops_qd32 >= c.device.iops_qd1);
    // Every set's sweep is there and recall grows with L.
    for b in &c.builds {
        let sweep = c.sweep(&b.set);
        assert!(sweep.len() >= 5, "{}: {} searches", b.set, sweep.len());
        assert!(sweep.last().unwrap().recall > sweep[0].recall, "{}", b.set);
    }
}

#[test]
fn line_fits_exactly_through_two_points_and_keeps_a_floor() {
    let l = Line::fit(&[(1.0, 3.0), (3.0, 7.0)]);
    assert!((l.slope - 2.0).abs() < 1e-12 && (l.intercept - 1.0).abs() < 1e-12);
    assert!((l.at(2.0) - 5.0).abs() < 1e-12);
    // Far below the fitted range the line would go negative: the floor holds.
    assert_eq!(l.at(-100.0), 1.5);
    let flat = Line::fit(&[(4.0, 2.0), (4.0, 4.0)]);
    assert_eq!((flat.slope, flat.at(100.0)), (0.0, 3.0));
}

#[test]
fn largest_n_finds_the_boundary() {
    assert_eq!(largest_n(1 << 40, |n| n <= 123_456_789), 123_456_789);
    assert_eq!(largest_n(1000, |_| true), 1000);
    assert_eq!(largest_n(1000, |_| false), 0);
    assert_eq!(largest_n(1000, |n| n == 1), 1);
}

fn tiny_calibration() -> Calibration {
    let build = |set: &str, role: &str, n: u64, pq: usize| BuildPoint {
        set: set.into(),
        role: role.into(),
        family: String::new(),
        n,
        dim: 64,
        dtype: "f32".into(),
        pq_bytes: pq,
        threads: 2,
        graph_s: 10.0,
        total_s: 12.0,
        peak_rss_bytes: None,
        shards: None,
        copies_per_point: None,
    };
    let search = |set: &str, l: usize, recall: f64, reads: f64| SearchPoint {
        set: set.into(),
        role: "fit".into(),
        n: 1000,
        dim: 64,
        dtype: "f32".into(),
        pq_bytes: 16,
        l,
        recall,
        reads,
        rounds: reads / 4.0,
        cpu_us: reads * 10.0,
        io_us: reads * 25.0,
        latency_us: reads * 35.0,
    };
    Calibration {
        measured: "test".into(),
        command: "none".into(),
        build_threads: 2,
        device: Device { iops_qd1: 1e4, iops_qd32: 5e4, read_latency_us_qd1: 100.0 },
        builds: vec![
            build("a", "fit", 1000, 16),
            build("b", "fit", 8000, 16),
            build("p", "pq", 1000, 4),
        ],
        searches: vec![
            search("a", 10, 0.80, 20.0),
            search("a", 20, 0.90, 40.0),
            search("a", 40, 0.96, 80.0),
            search("b", 10, 0.70, 30.0),
            search("b", 20, 0.85, 60.0),
            search("b", 40, 0.95, 120.0),
            search("b", 80, 0.97, 200.0),
            search("p", 10, 0.60, 20.0),
            search("p", 20, 0.75, 40.0),
            search("p", 40, 0.85, 80.0),
            search("p", 80, 0.95, 160.0),
        ],
    }
}

#[test]
fn costs_interpolate_between_the_two_l_around_the_recall() {
    let c = tiny_calibration();
    let at = c.cost_at("a", 0.93).unwrap();
    assert!((at.reads - 60.0).abs() < 1e-9, "{at:?}");
    assert!((at.cpu_us - 600.0).abs() < 1e-9);
    assert_eq!(c.cost_at("a", 0.5).unwrap().reads, 20.0, "below the sweep: its first L");
    assert!(c.cost_at("a", 0.99).is_none(), "never reached");
    assert!((c.recall_at_reads("a", 60.0).unwrap() - 0.93).abs() < 1e-9);
    assert_eq!(c.recall_at_reads("a", 1000.0).unwrap(), 0.96);
}

#[test]
fn reads_grow_through_the_measured_sizes() {
    let c = tiny_calibration();
    let m = c.search_model(0.95, "a").unwrap();
    // At 0.95: set a (n 1000) 80 * (0.95-0.90)/(0.06) ... interpolated, set b 120.
    let a = c.cost_at("a", 0.95).unwrap().reads;
    let b = c.cost_at("b", 0.95).unwrap().reads;
    assert!((m.cost(1000, 64).reads - a).abs() < 1e-6);
    assert!((m.cost(8000, 64).reads - b).abs() < 1e-6);
    // 64000 is as far past 8000 in ln N as 8000 is past 1000: a power law
    // multiplies by b / a again; the ln N bound adds b - a again.
    assert!((m.cost(64_000, 64).reads - b * b / a).abs() < 1e-6);
    assert!((m.reads_ln(64_000) - (2.0 * b - a)).abs() < 1e-6);
    let err = c.search_model(0.99, "a").unwrap_err();
    assert!(err.contains("past what the calibration measured"), "{err}");
    // Grown from b instead: the same line, so the same costs.
    let mb = c.search_model(0.95, "b").unwrap();
    assert!((mb.cost(1000, 64).reads - a).abs() < 1e-6);
    let err = c.search_model(0.95, "nope").unwrap_err();
    assert!(err.contains("a, b"), "{err}");
}

#[test]
fn pq_sweep_reads_by_bytes_per_dimension() {
    let c = tiny_calibration();
    let sweep = c.pq_sweep("a");
    assert_eq!(sweep, vec![(4.0 / 64.0, "p".to_string()), (0.25, "a".to_string())]);
    // PQ 4 of 64 (ratio 1/16) needs 160 reads for 0.95; PQ 16 (1/4) a's.
    let base = c.cost_at("a", 0.95).unwrap().reads;
    assert!((c.sweep_reads(&sweep, 4.0 / 64.0, 0.95).unwrap() - 160.0).abs() < 1e-9);
    assert!((c.sweep_reads(&sweep, 0.25, 0.95).unwrap() - base).abs() < 1e-9);
    // Half-way in log ratio: half-way in reads; past the ends: the ends.
    let mid = c.sweep_reads(&sweep, 8.0 / 64.0, 0.95).unwrap();
    assert!((mid - (160.0 + base) / 2.0).abs() < 1e-9, "{mid}");
    assert_eq!(c.sweep_reads(&sweep, 1.0, 0.95).unwrap(), base);
    // At the base's budget the small codes reach less recall.
    assert!((c.sweep_recall(&sweep, 0.25, base).unwrap() - 0.95).abs() < 1e-9);
    assert!(c.sweep_recall(&sweep, 4.0 / 64.0, base).unwrap() < 0.9);
    // Not reached by the set at one end: no value between.
    assert!(c.sweep_reads(&sweep, 0.1, 0.97).is_none());
}

#[test]
fn sizes_and_limits_grow_with_n_and_name_the_first_to_run_out() {
    let c = Calibration::builtin();
    let small = plan(&workload(10_000_000, 128), &c).unwrap();
    let big = plan(&workload(1_000_000_000, 128), &c).unwrap();
    assert!(big.ram.total > small.ram.total && big.disk.total > small.disk.total);
    assert!(big.search.reads > small.search.reads && big.search.extrapolated);
    assert_eq!(small.ram.codes, 10_000_000 * 32);
    // 1e9 x 128 f32 on 64 GiB: the in-memory build cannot fit, so it is partitioned.
    assert!(big.build.partitioned.is_some(), "{:?}", big.build);
    assert!(small.fits);
    // 32 GiB of codes alone pass a 16 GiB box: RAM runs out first.
    let mut w = workload(1_000_000_000, 128);
    w.ram_bytes = 16 << 30;
    w.build_memory_bytes = 14 << 30;
    let p = plan(&w, &c).unwrap();
    assert!(!p.fits);
    assert_eq!(p.limits[0].resource, "RAM");
    let n_max = p.limits[0].n_max;
    assert!(ram_for(&w.with_n(n_max), 32).total <= w.ram_bytes);
    assert!(ram_for(&w.with_n(n_max + 1), 32).total > w.ram_bytes);
    assert!(render(&p).contains("does NOT serve"));
    // A QPS target the disk cannot give: QPS is the limit.
    let mut w = workload(100_000_000, 128);
    w.qps_target = Some(1e7);
    let p = plan(&w, &c).unwrap();
    assert!(!p.fits && p.limits[0].resource == "QPS", "{:?}", p.limits);
}

#[test]
fn bad_workloads_are_refused_by_name() {
    let c = Calibration::builtin();
    let cases: Vec<(Workload, &str)> = vec![
        (workload(0, 128), "--n"),
        (workload(crate::format::NODES_MAX + 1, 128), "NODES_MAX"),
        (workload(1000, 0), "--dim"),
        (Workload { recall: 1.0, ..workload(1000, 128) }, "--recall"),
        (Workload { pq_bytes: 129, ..workload(1000, 128) }, "--pq-bytes"),
        (Workload { degree_max: 4, ..workload(1000, 128) }, "--R"),
        (Workload { cores: 0, ..workload(1000, 128) }, "--cores"),
        (Workload { disk_iops: 0.0, ..workload(1000, 128) }, "--disk-iops"),
    ];
    for (w, needle) in cases {
        let e = plan(&w, &c).unwrap_err();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

/// The model against the calibration's check sets: measured, never fitted.
#[test]
fn predictions_hold_on_the_measured_check_sets() {
    let c = Calibration::builtin();
    let checks: Vec<&BuildPoint> = c.builds.iter().filter(|b| b.role == "check").collect();
    assert!(!checks.is_empty());
    for b in checks {
        let recall = if c.cost_at(&b.set, 0.95).is_some() { 0.95 } else { 0.9 };
        let measured = c.cost_at(&b.set, recall).unwrap();
        let mut w = workload(b.n, b.dim);
        // Grown from the largest fitted set of the same generator and shape.
        let profile = c
            .builds
            .iter()
            .filter(|f| f.role == "fit" && f.dtype == b.dtype && f.dim == b.dim)
            .max_by_key(|f| f.n)
            .unwrap();
        w.profile = Some(profile.set.clone());
        w.cores = b.threads;
        w.recall = recall;
        w.pq_bytes = b.pq_bytes;
        let p = plan(&w, &c).unwrap();
        let ratio = |pred: f64, meas: f64| pred / meas;
        let reads = ratio(p.search.reads, measured.reads);
        let latency = ratio(p.search.latency_us, measured.cpu_us + measured.io_us);
        let build = ratio(p.build.in_memory_s, b.total_s);
        assert!((0.8..=1.25).contains(&reads), "{}: reads predicted/measured {reads:.2}", b.set);
        assert!((0.7..=1.4).contains(&latency), "{}: latency {latency:.2}", b.set);
        assert!((0.6..=1.6).contains(&build), "{}: build time {build:.2}", b.set);
        if let Some(rss) = b.peak_rss_bytes {
            // The estimate is the build's budget check: at or above the peak, not far.
            let mem = ratio(p.build.in_memory_bytes as f64, rss as f64);
            assert!((0.95..=1.6).contains(&mem), "{}: build memory {mem:.2}", b.set);
        }
    }
}

/// Growth fitted on sets whose costs fall with N (noise) is held flat: more
/// points never cost fewer reads, rounds or CPU. Checked on a calibration
/// whose larger set reads less than its smaller one.
#[test]
fn fitted_growth_never_falls_with_n() {
    let l = Line::fit_rising(&[(1.0, 7.0), (3.0, 3.0)]);
    assert_eq!((l.slope, l.at(100.0)), (0.0, 5.0), "the best flat line: the mean");
    let rising = Line::fit_rising(&[(1.0, 3.0), (3.0, 7.0)]);
    assert_eq!(rising, Line::fit(&[(1.0, 3.0), (3.0, 7.0)]));
    let mut c = tiny_calibration();
    for s in c.searches.iter_mut().filter(|s| s.set == "b") {
        s.reads /= 4.0;
        s.rounds /= 4.0;
        s.cpu_us /= 8.0;
    }
    let m = c.search_model(0.95, "a").unwrap();
    for (name, l) in [
        ("reads", m.reads_growth),
        ("rounds", m.rounds_growth),
        ("reads ln N", m.reads_growth_ln),
        ("cpu per read", m.cpu_per_read_growth),
    ] {
        assert!(l.slope >= 0.0, "{name}: {l:?}");
    }
    let (small, big) = (m.cost(1000, 64), m.cost(1_000_000, 64));
    assert!(big.reads >= small.reads && big.rounds >= small.rounds, "{small:?} {big:?}");
    assert!(big.cpu_us >= small.cpu_us, "{small:?} {big:?}");
    assert!(m.reads_ln(1_000_000) >= m.reads_ln(1000));
    // A build that is cheaper at the larger dimension: the rate is held flat.
    let mut c = tiny_calibration();
    c.builds[1].dim = 128;
    c.builds[1].graph_s = 1.0;
    c.builds[1].total_s = 1.5;
    assert!(c.build_core_s(1_000_000, 512) >= c.build_core_s(1_000_000, 64));
}

/// The extrapolation flag is set past the largest set the reads' growth was
/// fitted on, not past the 1M check set (measured, never fitted): 500K
/// grown from the 100K and 300K synthetic sets is extrapolated.
#[test]
fn extrapolated_past_the_growth_sets_not_the_check_set() {
    let c = Calibration::builtin();
    let checked = c.builds.iter().filter(|b| b.role == "check").map(|b| b.n).max().unwrap();
    let at = |n: u64, profile: &str| {
        let w = Workload { profile: Some(profile.into()), ..workload(n, 128) };
        plan(&w, &c).unwrap().search
    };
    let s = at(300_000, "f32-128-300000");
    assert!(!s.extrapolated && s.growth_n_max == 300_000, "{s:?}");
    let s = at(500_000, "f32-128-300000");
    assert!(s.extrapolated && 500_000 < checked, "{s:?}");
    // The real set's family reaches 100K.
    let real = c.default_profile().to_string();
    assert!(at(200_000, &real).extrapolated);
    assert!(!at(100_000, &real).extrapolated);
}

/// Byte options past OPTION_BYTES_MAX are refused by name, and at the limit
/// every sum is still larger than its parts (none wraps).
#[test]
fn absurd_byte_options_are_refused_and_sums_do_not_wrap() {
    let c = Calibration::builtin();
    let huge = u64::MAX / 2 + 1;
    let cases: Vec<(Workload, &str)> = vec![
        (Workload { delta_bytes_max: huge, ..workload(1000, 128) }, "--delta"),
        (Workload { cache_bytes: u64::MAX, ..workload(1000, 128) }, "--cache"),
        (Workload { wal_retention_bytes: huge, ..workload(1000, 128) }, "--wal-retention"),
        (Workload { disk_bytes: Some(u64::MAX), ..workload(1000, 128) }, "--disk"),
        (Workload { ram_bytes: u64::MAX, ..workload(1000, 128) }, "--ram"),
    ];
    for (w, needle) in cases {
        let e = plan(&w, &c).unwrap_err();
        assert!(e.contains(needle) && e.contains("OPTION_BYTES_MAX"), "{needle}: {e}");
    }
    let max = OPTION_BYTES_MAX;
    let w = Workload {
        delta_bytes_max: max,
        cache_bytes: max,
        wal_retention_bytes: max,
        ram_bytes: max,
        build_memory_bytes: max,
        disk_bytes: Some(max),
        ..workload(crate::format::NODES_MAX, 128)
    };
    let p = plan(&w, &c).unwrap();
    assert!(p.ram.total >= 3 * max && p.ram.total >= p.ram.codes, "{:?}", p.ram);
    assert!(p.disk.total >= 2 * max && p.disk.build_total >= p.disk.index, "{:?}", p.disk);
    assert!(!p.fits);
}

/// The disk's largest N is the boundary of the disk a build needs, also
/// where the build is refused for its memory: a refused build still needs
/// its scratch once it runs, so the need grows with N and the bisection
/// cannot land on a larger N that looked cheaper.
#[test]
fn disk_limit_is_the_boundary_past_a_refused_build() {
    let c = Calibration::builtin();
    let mut w = workload(1_000_000, 128);
    w.build_memory_bytes = 4 << 30;
    let p = plan(&w, &c).unwrap();
    let refused_from = p.limits.iter().find(|l| l.resource == "build memory").unwrap().n_max + 1;
    assert!(refused_from > 1000 && refused_from < crate::format::NODES_MAX, "{:?}", p.limits);
    let base = w.clone();
    let need = |n: u64| disk_need_bytes(&base.with_n(n));
    assert!(
        need(refused_from) >= need(refused_from - 1),
        "the need falls where the build is refused"
    );
    assert!(plan(&w.with_n(refused_from), &c).unwrap().disk.build_scratch > 0);
    // Disks that hold the partitioned build of some N short of the refusal
    // (and the serving files of N past it): the disk's limit is that N.
    for share in [0.5, 0.9, 0.99] {
        let n = (refused_from as f64 * share) as u64;
        w.disk_bytes = Some(need(n));
        let p = plan(&w, &c).unwrap();
        let n_max = p.limits.iter().find(|l| l.resource == "disk").unwrap().n_max;
        assert_eq!(n_max, n, "share {share} of {refused_from}");
    }
}

/// A partitioned build costs its shard graphs at the expected shard size
/// (2.5N / shards, not the larger cap) plus its k-means, assignment, merge and
/// connect; held to the 2M x 128 run of bench/partitioned.sh (926 s with 2
/// threads under 0.5 GiB, bench/results/partitioned-2m-2026-12-06.jsonl).
#[test]
fn partitioned_build_time_counts_every_phase_at_the_expected_shard_size() {
    let c = Calibration::builtin();
    let profile = "f32-128-300000";
    let mut w = workload(2_000_000, 128);
    w.cores = 2;
    w.build_memory_bytes = 512 << 20;
    w.profile = Some(profile.into());
    let p = plan(&w, &c).unwrap();
    let (pp, ph) = (p.build.partitioned.clone().unwrap(), p.build.partitioned_phases_s.unwrap());
    for (name, s) in [
        ("k-means", ph.kmeans),
        ("assignment", ph.assignment),
        ("shard graphs", ph.shard_graphs),
        ("merge", ph.merge),
        ("connect", ph.connect),
        ("rest", ph.rest),
    ] {
        assert!(s > 0.0, "{name}: {ph:?}");
    }
    let sum = ph.kmeans + ph.assignment + ph.shard_graphs + ph.merge + ph.connect + ph.rest;
    assert!((p.build.partitioned_s.unwrap() - sum).abs() < 1e-9 * sum, "{:?}", p.build);
    let f = c.partition_factor().unwrap();
    let factor = c.profile_build_factor(profile) / w.cores as f64;
    let copies = PARTITION_COPIES_EXPECTED;
    let shard = (copies * 2e6 / pp.shards as f64).ceil() as u64;
    let expected = copies * 2e6 * c.graph_per_point(shard, 128);
    assert!((ph.shard_graphs - f * expected * factor).abs() < 1e-6 * ph.shard_graphs, "{ph:?}");
    // The 926 s run placed 2 copies a point; the model counts the third
    // copies too (2.5 a point: 1.25x the shard inserts), hence up to 2x.
    let total = ph.total();
    assert!((0.6..=2.0).contains(&(total / 926.2)), "{total:.0} s against 926 s: {ph:?}");
}

/// A calibration whose partitioned run has fewer than 2 shards is refused
/// when parsed (the model divides by the shard count).
#[test]
fn calibration_with_zero_shards_is_refused() {
    let mut c = tiny_calibration();
    c.builds.push(BuildPoint {
        set: "s".into(),
        role: "partitioned".into(),
        shards: Some(0),
        ..c.builds[1].clone()
    });
    let e = Calibration::parse(&serde_json::to_string(&c).unwrap()).unwrap_err();
    assert!(e.contains("0 shards"), "{e}");
    c.builds.last_mut().unwrap().shards = Some(2);
    Calibration::parse(&serde_json::to_string(&c).unwrap()).unwrap();
}

/// PQ sizes below the sweep show nothing (nothing was measured); above it
/// they keep the largest size's reads, flagged as a bound; a chosen size
/// below the sweep is planned at the smallest's reads and flagged.
#[test]
fn pq_sizes_outside_the_sweep() {
    let c = tiny_calibration();
    let row = |p: &Plan, bytes: usize| p.pq.iter().find(|r| r.pq_bytes == bytes).unwrap().clone();
    let p = plan(&Workload { pq_bytes: 32, ..workload(1000, 64) }, &c).unwrap();
    let (largest, above) = (row(&p, 16), row(&p, 32));
    assert_eq!((largest.sweep, above.sweep), (SweepPosition::Inside, SweepPosition::Above));
    assert_eq!(above.reads, largest.reads);
    assert!(above.reads.is_some() && !p.pq_below_sweep);
    assert!(render(&p).contains("above the sweep"));
    let p = plan(&Workload { pq_bytes: 2, ..workload(1000, 64) }, &c).unwrap();
    let (below, smallest) = (row(&p, 2), row(&p, 4));
    assert_eq!((below.sweep, smallest.sweep), (SweepPosition::Below, SweepPosition::Inside));
    assert_eq!((below.reads, below.recall_at_budget), (None, None));
    assert!(smallest.reads.is_some() && p.pq_below_sweep);
    assert!((p.search.reads - smallest.reads.unwrap()).abs() < 1e-9);
    let text = render(&p);
    assert!(
        text.contains("below the sweep: not measured") && text.contains("lower bound"),
        "{text}"
    );
}

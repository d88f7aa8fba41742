//! Prometheus metrics. Event metrics (requests, searches, WAL flushes,
//! merges) go through the `metrics` facade into the exporter's recorder;
//! per-collection state (points, tombstones, delta, generation, LSN) is
//! read from the open collections at scrape time, so a deleted collection's
//! series disappear with it. Names are `basalt_*` in base units; counters
//! end in `_total`; histograms have explicit buckets. Labels are bounded:
//! `collection` by `limits.collections_max`, `route` by the router's
//! templates, `status` by the HTTP codes the handlers use.

use std::fmt::Write as _;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::collection::Stats;

pub const HTTP_REQUESTS: &str = "basalt_http_requests_total";
pub const HTTP_DURATION: &str = "basalt_http_request_duration_seconds";
pub const SEARCH_DURATION: &str = "basalt_search_duration_seconds";
pub const SEARCH_READS: &str = "basalt_search_sector_reads";
pub const SEARCH_ROUNDS: &str = "basalt_search_rounds";
pub const SEARCHES: &str = "basalt_searches_total";
pub const QUEUE_DEPTH: &str = "basalt_search_queue_depth";
pub const QUEUE_REJECTIONS: &str = "basalt_search_queue_rejections_total";
pub const HANDLER_PANICS: &str = "basalt_handler_panics_total";
pub const UPSERTED_POINTS: &str = "basalt_upserted_points_total";
pub const DELETED_POINTS: &str = "basalt_deleted_points_total";
pub const FILTER_PLANS: &str = "basalt_filtered_searches_total";
pub const FILTER_PAYLOAD_CHECKS: &str = "basalt_filter_payload_checks";

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const READS_BUCKETS: &[f64] =
    &[0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 60.0, 80.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0];
const CHECKS_BUCKETS: &[f64] =
    &[0.0, 10.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0, 1000000.0];
const ROUNDS_BUCKETS: &[f64] = &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0];
const FSYNC_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];
const MERGE_BUCKETS: &[f64] =
    &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0];

/// Installs the process-wide recorder (once, at start-up).
pub fn install() -> Result<PrometheusHandle, String> {
    let b = PrometheusBuilder::new();
    let set = |b: PrometheusBuilder, name: &str, buckets: &[f64]| {
        b.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
            .map_err(|e| format!("metrics buckets for {name}: {e}"))
    };
    let b = set(b, HTTP_DURATION, LATENCY_BUCKETS)?;
    let b = set(b, SEARCH_DURATION, LATENCY_BUCKETS)?;
    let b = set(b, SEARCH_READS, READS_BUCKETS)?;
    let b = set(b, SEARCH_ROUNDS, ROUNDS_BUCKETS)?;
    let b = set(b, FILTER_PAYLOAD_CHECKS, CHECKS_BUCKETS)?;
    let b = set(b, crate::wal::METRIC_FSYNC_SECONDS, FSYNC_BUCKETS)?;
    let b = set(b, crate::collection::merge::METRIC_MERGE_SECONDS, MERGE_BUCKETS)?;
    let handle = b.install_recorder().map_err(|e| format!("metrics recorder: {e}"))?;
    describe();
    // Counters exist from the start (at 0), so rate() and alerts on them
    // work before the first event.
    for name in [
        QUEUE_REJECTIONS,
        HANDLER_PANICS,
        UPSERTED_POINTS,
        DELETED_POINTS,
        crate::wal::METRIC_BYTES,
    ] {
        metrics::counter!(name).increment(0);
    }
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route template and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency by route template");
    describe_histogram!(SEARCH_DURATION, Unit::Seconds, "One query's search time on its thread");
    describe_histogram!(SEARCH_READS, "4 KiB sector reads of one query's disk search");
    describe_histogram!(SEARCH_ROUNDS, "Beam-search rounds (read waits) of one query");
    describe_counter!(SEARCHES, "Queries searched");
    describe_counter!(
        FILTER_PLANS,
        "Filtered queries by the planner's choice (exact, graph, graph+exact, exact-all, none)"
    );
    describe_histogram!(
        FILTER_PAYLOAD_CHECKS,
        "Payloads read and checked by one filtered query (0 when the indexes answer)"
    );
    describe_gauge!(QUEUE_DEPTH, "Searches waiting for a search thread");
    describe_counter!(QUEUE_REJECTIONS, "Searches refused with 503 because the queue was full");
    describe_counter!(HANDLER_PANICS, "Requests answered 500 after a handler bug");
    describe_counter!(UPSERTED_POINTS, "Points upserted (acknowledged)");
    describe_counter!(DELETED_POINTS, "Points deleted (acknowledged, found)");
    describe_histogram!(crate::wal::METRIC_FSYNC_SECONDS, Unit::Seconds, "WAL fdatasync time");
    describe_counter!(crate::wal::METRIC_BYTES, Unit::Bytes, "Bytes appended to WALs");
    describe_histogram!(
        crate::collection::merge::METRIC_MERGE_SECONDS,
        Unit::Seconds,
        "Duration of finished merges"
    );
    describe_counter!(crate::collection::merge::METRIC_MERGES, "Merges finished, by outcome");
}

/// Appends one gauge family (HELP, TYPE, one line per collection).
fn family(out: &mut String, name: &str, help: &str, rows: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (coll, v) in rows {
        let _ = writeln!(out, "{name}{{collection=\"{coll}\"}} {v}");
    }
}

/// The scrape-time families: process-level ones, then one line per open
/// collection per family (names are [A-Za-z0-9_-]: no escaping needed).
pub fn render_state(out: &mut String, colls: &[(String, Stats, f64)], ready: bool) {
    let _ = writeln!(out, "# HELP basalt_build_info The running build (value 1)");
    let _ = writeln!(out, "# TYPE basalt_build_info gauge");
    let _ = writeln!(out, "basalt_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "# HELP basalt_ready 1 once every collection is open and replayed");
    let _ = writeln!(out, "# TYPE basalt_ready gauge");
    let _ = writeln!(out, "basalt_ready {}", u8::from(ready));
    let _ = writeln!(out, "# HELP basalt_collections Open collections");
    let _ = writeln!(out, "# TYPE basalt_collections gauge");
    let _ = writeln!(out, "basalt_collections {}", colls.len());
    let rows = |f: &dyn Fn(&Stats, f64) -> f64| -> Vec<(&str, f64)> {
        colls.iter().map(|(n, s, p)| (n.as_str(), f(s, *p))).collect()
    };
    family(out, "basalt_points", "Live points", &rows(&|s, _| s.points as f64));
    family(
        out,
        "basalt_tombstones",
        "Deleted or replaced disk points not yet merged away",
        &rows(&|s, _| s.tombstones as f64),
    );
    family(
        out,
        "basalt_delta_points",
        "Points in the active in-memory delta",
        &rows(&|s, _| s.delta_points as f64),
    );
    family(
        out,
        "basalt_delta_bytes",
        "Memory of the active delta",
        &rows(&|s, _| s.delta_bytes as f64),
    );
    family(
        out,
        "basalt_frozen_delta_points",
        "Points of the delta being merged",
        &rows(&|s, _| s.frozen_delta_points as f64),
    );
    family(
        out,
        "basalt_disk_slots",
        "Node slots of the disk generation",
        &rows(&|s, _| s.disk_slots as f64),
    );
    family(
        out,
        "basalt_generation",
        "Disk generation number (-1: none yet)",
        &rows(&|s, _| s.generation.map_or(-1.0, |g| g as f64)),
    );
    family(
        out,
        "basalt_wal_last_lsn",
        "Last acknowledged WAL record",
        &rows(&|s, _| s.last_lsn as f64),
    );
    family(
        out,
        "basalt_generation_lsn",
        "WAL position the disk generation includes",
        &rows(&|s, _| s.generation_lsn as f64),
    );
    family(
        out,
        "basalt_merge_running",
        "1 while a merge runs",
        &rows(&|s, _| f64::from(u8::from(s.merging))),
    );
    family(
        out,
        "basalt_merge_progress_ratio",
        "Progress of the running merge, 0 to 1",
        &rows(&|_, p| p),
    );
    family(
        out,
        "basalt_merge_failed",
        "1 if the last merge failed",
        &rows(&|s, _| f64::from(u8::from(s.last_merge_error.is_some()))),
    );
}

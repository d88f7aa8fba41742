//! What operators run beside the daemon: a real Prometheus scraping it
//! (Debian's package), promtool on the metrics and the shipped alert rules,
//! the Grafana dashboard's queries, and systemd-analyze on the units. The
//! tools are installed by scripts/ensure-tools.sh when missing.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn ensure(tool: &str) {
    let ok = Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/ensure-tools.sh"))
        .arg(tool)
        .status()
        .expect("run scripts/ensure-tools.sh")
        .success();
    assert!(ok, "scripts/ensure-tools.sh {tool} failed");
}

/// A daemon with one collection, some writes and some queries.
fn busy_server(dir: &Path) -> Server {
    let s = Server::start(dir, &[]);
    let body = json!({"vectors": {"size": 4, "distance": "Dot"}}).to_string();
    assert_eq!(s.req("PUT", "/collections/ops", Some(&body)).0, 200);
    let points: Vec<Value> =
        (0..20).map(|i| json!({"id": i, "vector": [i as f32, 1.0, 0.5, 0.25]})).collect();
    let (st, v) =
        s.req("PUT", "/collections/ops/points", Some(&json!({"points": points}).to_string()));
    assert_eq!(st, 200, "{v}");
    for i in 0..5 {
        let q = json!({"query": [1.0, i as f32, 0.0, 1.0], "limit": 3}).to_string();
        assert_eq!(s.req("POST", "/collections/ops/points/query", Some(&q)).0, 200);
    }
    assert_eq!(s.req("POST", "/collections/nope/points/query", Some("{}")).0, 404);
    s
}

fn metrics_text(s: &Server) -> String {
    let (st, v) = s.req("GET", "/metrics", None);
    assert_eq!(st, 200);
    v.as_str().expect("text").to_string()
}

#[test]
fn promtool_accepts_the_metrics_and_the_alert_rules_and_the_dashboard_queries_exist() {
    ensure("prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = busy_server(dir.path());
    let text = metrics_text(&s);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = Path::new(ROOT).join("configs/prometheus/basalt-alerts.yml");
    let out = Command::new("promtool").args(["check", "rules"]).arg(&rules).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Every basalt_* series the rules and the dashboard query is exported.
    // (A family declared with no series yet, such as per-collection
    // replication lag before a standby connects, counts as exported.)
    let exported: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ").or(Some(l).filter(|l| !l.starts_with('#'))))
        .filter(|l| l.starts_with("basalt_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let dash =
        std::fs::read_to_string(Path::new(ROOT).join("configs/grafana/basalt-dashboard.json"))
            .expect("dashboard");
    let _: Value = serde_json::from_str(&dash).expect("the dashboard is JSON");
    let rules_text = std::fs::read_to_string(&rules).expect("rules");
    for src in [&dash, &rules_text] {
        for word in src.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("basalt_") && word.len() > "basalt_".len() {
                assert!(
                    exported.contains(word),
                    "{word} is queried but not exported: {exported:?}"
                );
            }
        }
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn a_real_prometheus_scrapes_the_daemon() {
    ensure("prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = busy_server(&dir.path().join("data"));
    let cfg = dir.path().join("prometheus.yml");
    let rules = Path::new(ROOT).join("configs/prometheus/basalt-alerts.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: basalt\n    static_configs:\n      - targets: ['{}']\n",
            rules.display(),
            s.addr
        ),
    )
    .expect("write config");
    let port = free_port();
    let web = format!("127.0.0.1:{port}");
    let prom = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let t = Instant::now();
    let mut last = Value::Null;
    loop {
        assert!(t.elapsed() < Duration::from_secs(60), "the target never came up: {last}");
        std::thread::sleep(Duration::from_millis(500));
        let Ok((200, v)) = common::try_request(&web, "GET", "/api/v1/targets", None, &[]) else {
            continue;
        };
        last = v.clone();
        let targets = v["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        if targets.len() == 1 && targets[0]["health"] == "up" {
            break;
        }
    }
    // The scraped values are there, and the rules loaded.
    let t = Instant::now();
    loop {
        assert!(t.elapsed() < Duration::from_secs(30), "no basalt_points in Prometheus");
        let (st, v) = common::request(&web, "GET", "/api/v1/query?query=basalt_points", None, &[]);
        if st == 200
            && v["data"]["result"][0]["metric"]["collection"] == "ops"
            && v["data"]["result"][0]["value"][1] == "20"
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, v) = common::request(&web, "GET", "/api/v1/rules", None, &[]);
    let n: usize = v["data"]["groups"]
        .as_array()
        .map_or(0, |g| g.iter().map(|g| g["rules"].as_array().map_or(0, Vec::len)).sum());
    assert_eq!(n, 14, "alert rules loaded: {v}");
    drop(prom);
}

#[test]
fn systemd_units_verify_and_their_exposure_is_low() {
    ensure("systemd");
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_basalt");
    // systemd-analyze checks that ExecStart's binary exists: point the
    // copies at the one cargo built (the only change).
    let mut units = Vec::new();
    for (src, dst) in
        [("basalt.service", "basalt.service"), ("basalt@.service", "basalt@primary.service")]
    {
        let text =
            std::fs::read_to_string(Path::new(ROOT).join("systemd").join(src)).expect("unit");
        assert!(text.contains("ExecStart=/usr/local/bin/basalt serve"), "{src}");
        let p = dir.path().join(dst);
        std::fs::write(&p, text.replace("/usr/local/bin/basalt", bin)).expect("write");
        units.push(p);
    }
    let out = Command::new("systemd-analyze").arg("verify").args(&units).output().expect("run");
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let readme =
        std::fs::read_to_string(Path::new(ROOT).join("systemd/README.md")).expect("readme");
    for u in &units {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(u)
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let level: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in {text}"));
        assert!(level <= 2.0, "{} exposure {level}:\n{text}", u.display());
        // The docs state the score the units have.
        assert!(
            readme.contains(&format!("{level:.1} OK")),
            "systemd/README.md does not state {level:.1}"
        );
    }
}

//! Test harness for the daemon: the real `basalt serve` binary on a
//! loopback port the kernel picks, and a small HTTP/1.1 client (so a test
//! can also send what a well-behaved client never would).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<String>>,
    pub data: PathBuf,
}

impl Server {
    /// Starts `basalt serve` on `data` (127.0.0.1, any port) with extra
    /// environment, and waits until /readyz says ready (at most 60 s).
    pub fn start(data: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with(data, env, &[])
    }

    pub fn start_with(data: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_basalt"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(args)
            .env("RUST_LOG", "info,fjall=warn,lsm_tree=warn")
            .env("BASALT_SERVICE_SNAPSHOTS_DIR", data.join(".snapshots"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn basalt serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("basalt: listening on ") {
                    let _ = tx.send(a.trim().to_string());
                }
                let mut g = l2.lock().expect("log");
                g.push_str(&line);
                g.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("the daemon did not listen: {}", log.lock().expect("log"));
            }
        };
        let s = Server { child, addr, log, data: data.to_path_buf() };
        s.wait_ready(Duration::from_secs(60));
        s
    }

    pub fn wait_ready(&self, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok((200, _)) = try_request(&self.addr, "GET", "/readyz", None, &[]) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("not ready after {limit:?}: {}", self.log());
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// The replication listener's address (from its start-up line).
    pub fn repl_addr(&self) -> String {
        let t = Instant::now();
        loop {
            if let Some(a) = self
                .log()
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("basalt: replication listening on "))
            {
                return a.trim().to_string();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no replication listener: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn req(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        request(&self.addr, method, path, body, &[])
    }

    pub fn req_h(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        request(&self.addr, method, path, body, headers)
    }

    /// Sends SIGKILL (9) or SIGTERM (15) to the daemon.
    pub fn signal(&self, sig: i32) {
        use rustix::process::{Pid, Signal, kill_process};
        let s = match sig {
            9 => Signal::KILL,
            15 => Signal::TERM,
            other => panic!("signal {other} not used by the tests"),
        };
        let pid = Pid::from_raw(self.child.id() as i32).expect("a pid");
        kill_process(pid, s).expect("kill");
    }

    /// Waits for the process to exit (at most `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                panic!("still running after {limit:?}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    match try_request(addr, method, path, body.map(str::as_bytes), headers) {
        Ok(r) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// One request on a fresh connection; the body parsed as JSON (or a JSON
/// string of the text when it is not JSON).
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Value)> {
    let (status, text) = raw_request(addr, method, path, body, headers)?;
    let v = serde_json::from_slice(&text)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&text).into_owned()));
    Ok((status, v))
}

pub fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Vec<u8>)> {
    raw_request_head(addr, method, path, body, headers).map(|(s, _, b)| (s, b))
}

/// [`raw_request`], with the response's head (status line and headers).
pub fn raw_request_head(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if let Some(b) = body {
        // The server may answer (413) and close before reading it all.
        let _ = s.write_all(b);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let Some(end) = text.find("\r\n\r\n") else {
        return Err(std::io::Error::other(format!("no HTTP response: {text:?}")));
    };
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let head = &text[..end];
    let mut payload = out[end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    Ok((status, head.to_string(), payload))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..nl]).split(';').next().unwrap_or("0").trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = nl + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

/// The python of the test venv (qdrant-client installed), made by the
/// project's own script.
pub fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/pyenv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/pyenv.sh");
    assert!(out.status.success(), "scripts/pyenv.sh failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

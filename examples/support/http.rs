//! What the HTTP benches share: a keep-alive HTTP/1.1 client and the real
//! `basalt serve` started on a loopback port the kernel picks.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
    host: String,
}

impl Conn {
    pub fn new(addr: &str) -> Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Conn { r: BufReader::new(s.try_clone()?), w: s, host: addr.to_string() })
    }

    pub fn call(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        self.w.write_all(head.as_bytes())?;
        self.w.write_all(body)?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status: u16 = line.split_whitespace().nth(1).context("status")?.parse()?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse()?;
            }
        }
        let mut out = vec![0u8; len];
        self.r.read_exact(&mut out)?;
        Ok((status, out))
    }
}

pub struct Daemon {
    child: Child,
    pub addr: String,
    /// Everything the daemon wrote on stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `basalt serve` (the binary is `BASALT_BIN` or
    /// target/release/basalt) and waits until it is ready.
    pub fn start(data: &Path, env: &[(&str, &str)]) -> Result<Daemon> {
        let bin = std::env::var("BASALT_BIN").unwrap_or_else(|_| "target/release/basalt".into());
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("starting basalt serve")?;
        let mut err = BufReader::new(child.stderr.take().context("stderr")?);
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if err.read_line(&mut line)? == 0 {
                bail!("basalt serve exited before listening");
            }
            if let Some(a) = line.trim().strip_prefix("basalt: listening on ") {
                break a.to_string();
            }
        };
        let log = Arc::new(Mutex::new(String::new()));
        let l2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for l in err.lines() {
                let Ok(l) = l else { break };
                if let Ok(mut g) = l2.lock() {
                    g.push_str(&l);
                    g.push('\n');
                }
            }
        });
        let t = Instant::now();
        loop {
            if let Ok(mut c) = Conn::new(&addr)
                && let Ok((200, _)) = c.call("GET", "/readyz", b"")
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("not ready");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Daemon { child, addr, log })
    }

    /// The first line of the log starting with `prefix`, without it
    /// (waits up to `limit`).
    pub fn log_line(&self, prefix: &str, limit: Duration) -> Result<String> {
        let t = Instant::now();
        loop {
            if let Ok(g) = self.log.lock()
                && let Some(l) = g.lines().find_map(|l| l.strip_prefix(prefix))
            {
                return Ok(l.trim().to_string());
            }
            if t.elapsed() > limit {
                bail!("no {prefix:?} in the daemon's log");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the exit status must be 0.
    pub fn stop(mut self) -> Result<()> {
        Command::new("kill").arg(self.child.id().to_string()).status()?;
        let st = self.child.wait()?;
        if !st.success() {
            bail!("basalt serve exited {st}");
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

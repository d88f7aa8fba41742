//! `basalt promote` and `basalt rejoin`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use basalt::cli::{PromoteArgs, RejoinArgs};
use basalt::server::config::{Overrides, ServerConfig};
use basalt::server::repl::state::{self, Role};

fn load(config: Option<&std::path::Path>, flags: &Overrides) -> Result<ServerConfig> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    ServerConfig::load(config, &env, flags).map_err(anyhow::Error::msg)
}

/// Asks the running standby to promote itself (POST /replication/promote).
pub fn promote(a: PromoteArgs) -> Result<()> {
    let cfg = load(a.config.as_deref(), &Overrides { listen: a.listen, data_dir: None })?;
    let addr = cfg.listen_addr().map_err(anyhow::Error::msg)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to the standby at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let key = if cfg.service.api_key.is_empty() {
        String::new()
    } else {
        format!("api-key: {}\r\n", cfg.service.api_key)
    };
    write!(
        s,
        "POST /replication/promote HTTP/1.1\r\nHost: {addr}\r\n{key}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).context("reading the answer")?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    let body = body.trim();
    // A chunked body: keep the JSON line.
    let json = body.lines().find(|l| l.starts_with('{')).unwrap_or(body);
    println!("{json}");
    if status != "200" {
        bail!("promotion failed (HTTP {status})");
    }
    eprintln!(
        "promoted: repoint clients to http://{addr}, then rejoin the old primary (basalt rejoin)"
    );
    Ok(())
}

/// Marks a stopped node as a standby that discards its collections and
/// copies them afresh from the new primary at its next start.
pub fn rejoin(a: RejoinArgs) -> Result<()> {
    let cfg = load(a.config.as_deref(), &Overrides { listen: None, data_dir: a.data_dir })?;
    let data = cfg.service.data_dir.clone();
    // The daemon must be stopped: every collection's lock must be free.
    for e in std::fs::read_dir(&data).with_context(|| format!("listing {}", data.display()))? {
        let p = e?.path().join(basalt::collection::LOCK_FILE);
        if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&p)
            && rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
        {
            bail!(
                "{} is locked: the daemon is running; stop it first (systemctl stop basalt@…)",
                p.display()
            );
        }
    }
    let primary = a.primary.unwrap_or_else(|| cfg.replication.primary.clone());
    if primary.is_empty() {
        bail!("the new primary's replication address: --primary ADDR or replication.primary");
    }
    primary.parse::<std::net::SocketAddr>().with_context(|| format!("--primary {primary:?}"))?;
    let mut s = state::read(&data).map_err(anyhow::Error::msg)?.unwrap_or(state::NodeState {
        epoch: 1,
        role: Role::Primary,
        primary: String::new(),
        fenced_by: None,
        rejoin: false,
        history: Vec::new(),
    });
    let was = (s.role, s.epoch, s.fenced_by);
    s.role = Role::Standby;
    s.primary = primary.clone();
    s.rejoin = true;
    s.fenced_by = None;
    state::write(&data, &s).map_err(anyhow::Error::msg)?;
    eprintln!(
        "{}: was {:?} at epoch {} (fenced by {:?}); now a standby of {primary}. At its next start it \
         logs which of its records past the switch point are discarded, removes its collections and \
         copies them from the primary.",
        data.display(),
        was.0,
        was.1,
        was.2
    );
    Ok(())
}

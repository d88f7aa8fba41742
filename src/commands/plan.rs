//! `basalt plan`: the workload from the command line, the plan as text or JSON.

use anyhow::{Context, Result, bail};

use basalt::cli::PlanArgs;
use basalt::plan::{self, Calibration, Workload};

const GIB: f64 = (1u64 << 30) as f64;

/// GiB given on the command line as bytes; `name` is the option. At most
/// `OPTION_BYTES_MAX`, so that the plan's sums cannot wrap.
fn gib_bytes(name: &str, v: f64, zero_ok: bool) -> Result<u64> {
    if !v.is_finite() || v < 0.0 || (v == 0.0 && !zero_ok) {
        bail!("--{name} {v} must be a positive number of GiB");
    }
    let gib_max = plan::OPTION_BYTES_MAX >> 30;
    if v > gib_max as f64 {
        bail!("--{name} {v} GiB is more than {gib_max} GiB (OPTION_BYTES_MAX)");
    }
    Ok((v * GIB) as u64)
}

pub fn run(a: PlanArgs) -> Result<()> {
    let cal = match &a.calibration {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--calibration {}", p.display()))?;
            Calibration::parse(&text)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--calibration {}", p.display()))?
        }
        None => Calibration::builtin(),
    };
    let ram_bytes = match a.ram {
        Some(v) => gib_bytes("ram", v, false)?,
        None => basalt::index::meminfo_bytes("MemTotal")
            .context("--ram not given and /proc/meminfo unreadable")?,
    };
    let build_memory_bytes = match a.build_memory {
        Some(v) => gib_bytes("build-memory", v, false)?,
        None => ram_bytes / 10 * 9,
    };
    let cores = match a.cores {
        Some(c) => c,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let disk_iops = match a.disk_iops {
        Some(k) => k * 1e3,
        None => cal.device.iops_qd32,
    };
    let w = Workload {
        n: a.n,
        dim: a.dim,
        element: a.dtype,
        recall: a.recall,
        ram_bytes,
        build_memory_bytes,
        disk_iops,
        cores,
        disk_bytes: a.disk.map(|d| gib_bytes("disk", d, false)).transpose()?,
        qps_target: a.qps,
        degree_max: a.r,
        pq_bytes: a.pq_bytes.unwrap_or(a.dim.clamp(1, 32)),
        cache_bytes: gib_bytes("cache", a.cache, true)?,
        delta_bytes_max: gib_bytes("delta", a.delta, false)?,
        wal_retention_bytes: gib_bytes("wal-retention", a.wal_retention, true)?,
        profile: a.profile.clone(),
    };
    let p = plan::plan(&w, &cal).map_err(anyhow::Error::msg)?;
    if a.json {
        println!("{}", serde_json::to_string(&p)?);
    } else {
        print!("{}", plan::render(&p));
    }
    Ok(())
}

//! The collection subcommands: create, import, insert, delete, get, list,
//! query, merge, stats. Each opens the collection (replaying its WAL),
//! does one thing, and closes it (waiting for a background merge).

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use basalt::cli::{
    CollectionArg, CreateArgs, DeleteArgs, GetArgs, ImportArgs, InsertArgs, ListArgs, QueryArgs,
    SnapshotArgs,
};
use basalt::collection::config::CollectionConfig;
use basalt::collection::ids::ExternalId;
use basalt::collection::import::{read_ids_file, read_payloads_file};
use basalt::collection::merge::MergeProgress;
use basalt::collection::{Collection, CollectionOptions, PointIn};
use basalt::search::SearchParams;
use basalt::vecfile::VectorFile;

fn open(dir: &std::path::Path, no_auto_merge: bool) -> Result<Arc<Collection>> {
    let opts = CollectionOptions { no_auto_merge, ..CollectionOptions::default() };
    Collection::open(dir, opts).with_context(|| format!("opening collection {}", dir.display()))
}

fn parse_vector(s: &str) -> Result<Vec<f32>> {
    s.split(',')
        .map(|t| t.trim().parse::<f32>().with_context(|| format!("{t:?} is not a number")))
        .collect()
}

fn parse_id(s: &str) -> Result<ExternalId> {
    ExternalId::parse_cli(s).with_context(|| format!("id {s:?}"))
}

pub fn create(a: CreateArgs) -> Result<()> {
    let mut c = CollectionConfig::new(a.dim, a.metric, a.element);
    c.durability = a.durability.clone();
    c.degree_max = a.r;
    c.list_size = a.l;
    if let Some(p) = a.pq_bytes {
        c.pq_chunks = p;
    }
    if let Some(n) = a.delta_points_merge {
        c.delta_points_merge = n;
    }
    if let Some(b) = a.delta_bytes_max {
        c.delta_bytes_max = b;
    }
    c.auto_merge = !a.no_auto_merge;
    if c.durability == "none" {
        eprintln!(
            "WARNING: durability none: acknowledged writes are not fsynced and can be lost to a power cut or kernel crash"
        );
    }
    Collection::create(&a.collection, &c)?;
    println!("created {} ({} x {:?}, {:?})", a.collection.display(), a.dim, a.element, a.metric);
    Ok(())
}

pub fn import(a: ImportArgs) -> Result<()> {
    let ids = a.ids.as_deref().map(read_ids_file).transpose()?;
    let payloads = a.payloads.as_deref().map(read_payloads_file).transpose()?;
    let opts = basalt::index::build::BuildOptions {
        metric: a.metric,
        graph: basalt::vamana::BuildParams {
            degree_max: a.r,
            list_size: a.l,
            seed: a.seed,
            ..Default::default()
        },
        pq_chunks: a.pq_bytes,
        placement: basalt::format::graph::Placement::Packed,
        ..Default::default()
    };
    let s = basalt::collection::import::import(&a.data, ids, payloads, &a.out, &opts)?;
    println!(
        "imported {} points of dimension {} into {} in {:.1} s",
        s.points,
        s.dim,
        a.out.display(),
        s.seconds
    );
    Ok(())
}

pub fn insert(a: InsertArgs) -> Result<()> {
    let coll = open(&a.collection, a.no_merge)?;
    let out = std::io::stdout();
    if let Some(data) = &a.data {
        if a.batch == 0 || a.batch > basalt::collection::batch::BATCH_POINTS_MAX {
            bail!(
                "--batch {} outside 1..={}",
                a.batch,
                basalt::collection::batch::BATCH_POINTS_MAX
            );
        }
        let file = VectorFile::open(data)?;
        let n = file.len();
        let ids = a.ids.as_deref().map(read_ids_file).transpose()?;
        let payloads = a.payloads.as_deref().map(read_payloads_file).transpose()?;
        if ids.as_ref().is_some_and(|v| v.len() as u64 != n) {
            bail!("{} ids for {n} vectors", ids.as_ref().map_or(0, |v| v.len()));
        }
        if payloads.as_ref().is_some_and(|v| v.len() as u64 != n) {
            bail!("{} payload lines for {n} vectors", payloads.as_ref().map_or(0, |v| v.len()));
        }
        let mut row = 0u64;
        let mut buf = Vec::new();
        while row < n {
            let m = (a.batch as u64).min(n - row) as usize;
            file.read_rows_f32(row, m, &mut buf)?;
            let dim = file.dim();
            let points: Vec<PointIn> = (0..m)
                .map(|i| {
                    let r = row + i as u64;
                    PointIn {
                        id: ids
                            .as_ref()
                            .map_or(ExternalId::Num(a.first_id + r), |v| v[r as usize].clone()),
                        vector: buf[i * dim..(i + 1) * dim].to_vec(),
                        payload: payloads.as_ref().and_then(|p| p[r as usize].clone()),
                    }
                })
                .collect();
            let last = points.last().map(|p| p.id.clone()).expect("a batch has points");
            let ack = coll.upsert(&points)?;
            // One line per durable batch: a test that kills us knows what
            // was acknowledged.
            let mut o = out.lock();
            writeln!(o, "acked {last} lsn {} points {}", ack.lsn, ack.points)?;
            o.flush()?;
            row += m as u64;
        }
    } else {
        let (Some(id), Some(v)) = (&a.id, &a.vector) else {
            bail!("give an ID and --vector, or --data FILE");
        };
        let payload = match &a.payload {
            Some(p) => Some(serde_json::from_str(p).context("--payload is not JSON")?),
            None => None,
        };
        let p = PointIn { id: parse_id(id)?, vector: parse_vector(v)?, payload };
        let ack = coll.upsert(&[p])?;
        println!("acked {id} lsn {} points 1", ack.lsn);
    }
    coll.close();
    Ok(())
}

pub fn delete(a: DeleteArgs) -> Result<()> {
    let mut ids: Vec<ExternalId> = a.ids.iter().map(|s| parse_id(s)).collect::<Result<_>>()?;
    if let Some(f) = &a.ids_file {
        ids.extend(read_ids_file(f)?);
    }
    if ids.is_empty() {
        bail!("no ids to delete");
    }
    let coll = open(&a.collection, false)?;
    let mut found = 0;
    for chunk in ids.chunks(basalt::collection::batch::BATCH_POINTS_MAX) {
        let ack = coll.delete(chunk)?;
        found += ack.points;
        println!("deleted lsn {} found {} of {}", ack.lsn, ack.points, chunk.len());
    }
    eprintln!("{found} of {} ids were present", ids.len());
    coll.close();
    Ok(())
}

pub fn get(a: GetArgs) -> Result<()> {
    let coll = open(&a.collection, true)?;
    let id = parse_id(&a.id)?;
    match coll.get(&id)? {
        Some(p) => {
            let payload: serde_json::Value = match &p.payload {
                Some(s) => serde_json::from_str(s)?,
                None => serde_json::Value::Null,
            };
            println!(
                "{}",
                serde_json::json!({"id": id_json(&p.id), "vector": p.vector, "payload": payload})
            );
            Ok(())
        }
        None => bail!("no point with id {id}"),
    }
}

fn id_json(id: &ExternalId) -> serde_json::Value {
    match id {
        ExternalId::Num(n) => serde_json::json!(n),
        ExternalId::Str(s) => serde_json::json!(s),
    }
}

pub fn list(a: ListArgs) -> Result<()> {
    let coll = open(&a.collection, true)?;
    let mut after = a.after.as_deref().map(parse_id).transpose()?;
    let out = std::io::stdout();
    let mut o = out.lock();
    loop {
        let page = coll.scroll(after.as_ref(), a.limit)?;
        for id in &page {
            writeln!(o, "{id}")?;
        }
        if !a.all || page.len() < a.limit {
            break;
        }
        after = page.last().cloned();
    }
    Ok(())
}

pub fn query(a: QueryArgs) -> Result<()> {
    use basalt::collection::filter::Filter;
    use basalt::collection::filtered::FilterMode;
    let filter = match &a.filter {
        None => None,
        Some(t) => {
            let v: serde_json::Value =
                serde_json::from_str(t).map_err(|e| anyhow::anyhow!("--filter: not JSON: {e}"))?;
            Some(Filter::parse(&v, "--filter").map_err(anyhow::Error::msg)?)
        }
    };
    let mode = match a.plan.as_str() {
        "prefilter" => FilterMode::Prefilter,
        "graph" => FilterMode::Graph,
        "postfilter" => FilterMode::Postfilter,
        "exact" => FilterMode::Exact,
        _ => FilterMode::Auto,
    };
    let coll = open(&a.collection, true)?;
    let params = SearchParams { k: a.k, list_size: a.l, beam_width: a.beam };
    let queries: Vec<Vec<f32>> = match (&a.vector, &a.queries) {
        (Some(v), None) => vec![parse_vector(v)?],
        (None, Some(f)) => {
            let file = VectorFile::open(f)?;
            let mut buf = Vec::new();
            file.read_rows_f32(0, file.len() as usize, &mut buf)?;
            buf.chunks_exact(file.dim()).map(|c| c.to_vec()).collect()
        }
        _ => bail!("give --vector or --queries"),
    };
    let out = std::io::stdout();
    let mut o = out.lock();
    for q in &queries {
        let (hits, stats, fs) =
            coll.search_filtered(q, &params, a.payload, filter.as_ref(), mode)?;
        if a.explain {
            eprintln!("{}", serde_json::json!({"search": stats, "filter": fs}));
        }
        let row: Vec<serde_json::Value> = hits
            .iter()
            .map(|h| {
                let payload: serde_json::Value =
                    h.payload.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default();
                serde_json::json!({"id": id_json(&h.id), "distance": h.distance, "payload": payload})
            })
            .collect();
        writeln!(o, "{}", serde_json::Value::Array(row))?;
    }
    Ok(())
}

struct Bars(std::sync::Mutex<Option<indicatif::ProgressBar>>);
impl MergeProgress for Bars {
    fn phase(&self, name: &str, total: u64) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = g.take() {
            b.finish();
        }
        *g = Some(super::progress_bar(total, name));
    }
    fn advance(&self, done: u64) {
        if let Some(b) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            b.set_position(done);
        }
    }
}

pub fn index(a: basalt::cli::IndexArgs) -> Result<()> {
    use basalt::collection::pindex::{Schema, check_field};
    check_field(&a.field).map_err(|e| anyhow::anyhow!("--field: {e}"))?;
    let schema = a.schema.as_deref().map(|s| Schema::parse(s).expect("clap checked it"));
    let coll = open(&a.collection, true)?;
    let t = std::time::Instant::now();
    let ack = match schema {
        Some(s) => coll.create_payload_index(&a.field, s)?,
        None => coll.drop_payload_index(&a.field)?,
    };
    let entries = coll
        .payload_indexes(usize::MAX)?
        .into_iter()
        .find(|(f, _, _)| *f == a.field)
        .map_or(0, |(_, _, n)| n);
    println!(
        "{}",
        serde_json::json!({"field": a.field, "schema": schema.map(|s| s.name()), "lsn": ack.lsn,
            "entries": entries, "seconds": t.elapsed().as_secs_f64()})
    );
    coll.close();
    Ok(())
}

pub fn merge(a: CollectionArg) -> Result<()> {
    let coll = open(&a.collection, true)?;
    let bars = Bars(std::sync::Mutex::new(None));
    let r = coll.merge_now(&bars)?;
    if let Some(b) = bars.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
        b.finish_and_clear();
    }
    println!("{}", serde_json::to_string(&r)?);
    coll.close();
    Ok(())
}

pub fn stats(a: CollectionArg) -> Result<()> {
    let coll = open(&a.collection, true)?;
    println!("{}", serde_json::to_string_pretty(&coll.stats())?);
    Ok(())
}

pub fn snapshot(a: SnapshotArgs) -> Result<()> {
    let coll = open(&a.collection, true)?;
    let r = coll.snapshot(&a.dest)?;
    coll.close();
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(())
}

//! `basalt import`: a collection built from a vector file with the ids and
//! payloads a user brings. The index is built into a temporary sibling
//! directory with the engine's build, the ids file and the id map are added
//! there, and the directory is renamed into place last: a killed import
//! leaves no collection at the path (and the next import removes its
//! leftovers by name).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashSet;

use super::batch::PAYLOAD_BYTES_MAX;
use super::config::CollectionConfig;
use super::idfile::IdFileWriter;
use super::idmap::{APPLY_BATCH_CHANGES, Change, IdMap};
use super::ids::ExternalId;
use super::{CollectionError, META_DIR, write_config};
use crate::index::build::BuildOptions;
use crate::index::{IDS_FILE, MANIFEST_FILE};

/// Reads an ids file: one id per line (digits that fit u64 are a number,
/// anything else a string id).
pub fn read_ids_file(path: &Path) -> Result<Vec<ExternalId>, CollectionError> {
    let f = std::fs::File::open(path).map_err(|e| CollectionError::io(path, "open", e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| CollectionError::io(path, "read", e))?;
        let id = ExternalId::parse_cli(line.trim_end_matches('\r')).map_err(|e| {
            CollectionError::Invalid(format!("{}: line {}: {e}", path.display(), i + 1))
        })?;
        out.push(id);
    }
    Ok(out)
}

/// Reads a JSONL payload file: one JSON object, `null` or an empty line per row.
pub fn read_payloads_file(path: &Path) -> Result<Vec<Option<serde_json::Value>>, CollectionError> {
    let f = std::fs::File::open(path).map_err(|e| CollectionError::io(path, "open", e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| CollectionError::io(path, "read", e))?;
        let bad = |what: String| {
            CollectionError::Invalid(format!("{}: line {}: {what}", path.display(), i + 1))
        };
        let t = line.trim();
        if t.is_empty() || t == "null" {
            out.push(None);
            continue;
        }
        if t.len() > PAYLOAD_BYTES_MAX {
            return Err(bad(format!(
                "payload of {} bytes exceeds PAYLOAD_BYTES_MAX ({PAYLOAD_BYTES_MAX})",
                t.len()
            )));
        }
        let v: serde_json::Value =
            serde_json::from_str(t).map_err(|e| bad(format!("JSON: {e}")))?;
        if !v.is_object() {
            return Err(bad("a payload is a JSON object".into()));
        }
        out.push(Some(v));
    }
    Ok(out)
}

/// What an import made.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportSummary {
    pub points: u64,
    pub dim: usize,
    pub seconds: f64,
}

/// Builds the collection `out` from `data`, with ids (default: row
/// numbers) and payloads.
pub fn import(
    data: &Path,
    ids: Option<Vec<ExternalId>>,
    payloads: Option<Vec<Option<serde_json::Value>>>,
    out: &Path,
    opts: &BuildOptions,
) -> Result<ImportSummary, CollectionError> {
    let started = std::time::Instant::now();
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| CollectionError::io(out, "list", e))?
            .next()
            .is_none();
        if !empty {
            return Err(CollectionError::Invalid(format!(
                "{}: exists and is not empty; import creates a new collection",
                out.display()
            )));
        }
    }
    let file = crate::vecfile::VectorFile::open(data)
        .map_err(|e| CollectionError::Invalid(e.to_string()))?;
    let n = file.len();
    drop(file);
    if let Some(ids) = &ids {
        if ids.len() as u64 != n {
            return Err(CollectionError::Invalid(format!(
                "{} ids for {n} vectors: the ids file has one line per row",
                ids.len()
            )));
        }
        let mut seen = FxHashSet::default();
        for (row, id) in ids.iter().enumerate() {
            if !seen.insert(id) {
                return Err(CollectionError::Invalid(format!(
                    "id {id} appears twice (again at row {row})"
                )));
            }
        }
    }
    let payloads: Option<Vec<Option<String>>> = match payloads {
        None => None,
        Some(p) if p.len() as u64 != n => {
            return Err(CollectionError::Invalid(format!(
                "{} payload lines for {n} vectors: one line per row",
                p.len()
            )));
        }
        Some(p) => Some(p.into_iter().map(|v| v.map(|v| v.to_string())).collect()),
    };
    let tmp = temp_dir(out);
    remove_tree_by_name(&tmp);
    let r = (|| {
        crate::index::build::build_index(data, &tmp, opts, &())?;
        let mut manifest = crate::index::read_manifest(&tmp)?;
        let ident = manifest.ident();
        let gen_dir = tmp.join(manifest.generation_dir());
        let id_of =
            |row: u64| ids.as_ref().map_or(ExternalId::Num(row), |v| v[row as usize].clone());
        // A packed build numbered its nodes apart from the rows.
        let rows = crate::index::build::read_row_ids(&gen_dir, ident, n)?;
        let row_of = |slot: u64| rows.as_ref().map_or(slot, |r| u64::from(r[slot as usize]));
        let mut w = IdFileWriter::create(&gen_dir.join(IDS_FILE), n, ident)?;
        for slot in 0..n {
            w.append(Some(&id_of(row_of(slot))))?;
        }
        w.finish()?;
        let p = gen_dir.join(IDS_FILE);
        manifest.files.retain(|f| f.name != IDS_FILE);
        manifest.files.push(crate::index::FileEntry {
            name: IDS_FILE.to_string(),
            bytes: std::fs::metadata(&p).map_err(|e| CollectionError::io(&p, "stat", e))?.len(),
            xxh3: crate::index::verify::file_xxh3(&p)?,
        });
        let map = IdMap::open(&tmp.join(META_DIR))?;
        let mut chunk = Vec::with_capacity(APPLY_BATCH_CHANGES);
        for slot in 0..n {
            let row = row_of(slot);
            let payload = payloads.as_ref().and_then(|p| p[row as usize].clone());
            chunk.push(Change::Put { id: id_of(row), slot: slot as u32, payload });
            if chunk.len() == APPLY_BATCH_CHANGES {
                map.apply_chunk(&chunk)?;
                chunk.clear();
            }
        }
        map.apply_chunk(&chunk)?;
        map.set_applied(ident)?;
        drop(map);
        let mpath = tmp.join(MANIFEST_FILE);
        let (pending, mut f) = crate::fsutil::PendingFile::create(&mpath)
            .map_err(|e| CollectionError::io(&mpath, "create", e))?;
        std::io::Write::write_all(&mut f, &manifest.encode())
            .map_err(|e| CollectionError::io(&mpath, "write", e))?;
        pending.commit(f).map_err(|e| CollectionError::io(&mpath, "commit", e))?;
        let mut c = CollectionConfig::new(manifest.dim, manifest.metric, manifest.element);
        c.degree_max = opts.graph.degree_max;
        c.list_size = opts.graph.list_size;
        c.alpha = opts.graph.alpha;
        c.pq_chunks = opts.pq_chunks;
        c.seed = opts.graph.seed;
        write_config(&tmp, &c)?;
        crate::fsutil::sync_dir(&gen_dir).map_err(|e| CollectionError::io(&gen_dir, "fsync", e))?;
        crate::fsutil::sync_dir(&tmp).map_err(|e| CollectionError::io(&tmp, "fsync", e))?;
        if out.exists() {
            std::fs::remove_dir(out).map_err(|e| CollectionError::io(out, "remove", e))?;
        }
        std::fs::rename(&tmp, out).map_err(|e| CollectionError::io(out, "rename", e))?;
        let parent = crate::fsutil::parent_dir(out);
        crate::fsutil::sync_dir(&parent).map_err(|e| CollectionError::io(&parent, "fsync", e))?;
        Ok(ImportSummary {
            points: n,
            dim: manifest.dim as usize,
            seconds: started.elapsed().as_secs_f64(),
        })
    })();
    if r.is_err() {
        remove_tree_by_name(&tmp);
    }
    r
}

fn temp_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    crate::fsutil::parent_dir(out).join(format!(".{name}.import"))
}

/// Removes an unfinished import's directory. Only our own temporary name
/// is ever passed here; fjall's `meta/` tree is ours too.
fn remove_tree_by_name(p: &Path) {
    if p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".import")) {
        let _ = std::fs::remove_dir_all(p);
    }
}

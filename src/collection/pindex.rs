//! Payload indexes: for a field a user names (`PUT .../index`), every
//! value of that field of every point on disk, as keys of the id map's
//! store (fjall) that sort by value:
//!
//! ```text
//! field | 0x00 | tag | value | slot (u32 big-endian)   -> (empty)
//! tag 'k' keyword / uuid: u32 length + bytes   'i' integer: i64, sign flipped
//! tag 'n' any number: f64, order-preserving    'b' bool: one byte
//! tag 'd' datetime: microseconds (i64), sign flipped
//! ```
//!
//! An `integer` index keeps 'i' (for match) and 'n' (for range: a range
//! holds for float values too); `float` keeps 'n'; `keyword` and `uuid`
//! keep the strings as written; `datetime` keeps the strings that parse as
//! date-times. Entries follow the id map: every change the map applies
//! (merge, import, catch-up) removes the old point's entries and writes the
//! new one's in the same batch, so the indexes reflect the same generation
//! as the map. Points of the delta are not indexed: they are in memory and
//! filtered by their payloads.
//!
//! [`IdMap::resolve`] turns a filter into the set of slots that match (when
//! every condition is answered by an index: exact) or a superset of them
//! (some conditions need the payload), or nothing known.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use serde_json::Value;

use super::filter::{Bounds, Cond, FieldTest, Filter, KeyPath, Scalar, parse_datetime};
use super::idmap::{IdMap, IdMapError, key};

/// Longest field name an index takes (bytes).
pub const INDEX_FIELD_BYTES_MAX: usize = 256;
/// Payload indexes per collection, at most.
pub const INDEXES_MAX: usize = 64;
const DEF_PREFIX: &[u8] = b"index:";

/// The state keys that hold index definitions start with this.
pub fn pindex_defs_prefix() -> &'static [u8] {
    DEF_PREFIX
}

/// The kinds of payload index (Qdrant's field schemas).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    Keyword,
    Integer,
    Float,
    Bool,
    Uuid,
    Datetime,
}

impl Schema {
    pub fn parse(s: &str) -> Option<Schema> {
        Some(match s {
            "keyword" => Schema::Keyword,
            "integer" => Schema::Integer,
            "float" => Schema::Float,
            "bool" => Schema::Bool,
            "uuid" => Schema::Uuid,
            "datetime" => Schema::Datetime,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Schema::Keyword => "keyword",
            Schema::Integer => "integer",
            Schema::Float => "float",
            Schema::Bool => "bool",
            Schema::Uuid => "uuid",
            Schema::Datetime => "datetime",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Schema::Keyword => 1,
            Schema::Integer => 2,
            Schema::Float => 3,
            Schema::Bool => 4,
            Schema::Uuid => 5,
            Schema::Datetime => 6,
        }
    }

    fn of_tag(t: u8) -> Option<Schema> {
        [
            Schema::Keyword,
            Schema::Integer,
            Schema::Float,
            Schema::Bool,
            Schema::Uuid,
            Schema::Datetime,
        ]
        .into_iter()
        .find(|s| s.tag() == t)
    }
}

/// Checks a field name for an index.
pub fn check_field(field: &str) -> Result<KeyPath, String> {
    if field.len() > INDEX_FIELD_BYTES_MAX {
        return Err(format!(
            "field_name of {} bytes exceeds INDEX_FIELD_BYTES_MAX ({INDEX_FIELD_BYTES_MAX})",
            field.len()
        ));
    }
    if field.contains('\0') {
        return Err("field_name holds a NUL character".into());
    }
    KeyPath::parse(field)
}

fn flip(i: i64) -> [u8; 8] {
    ((i as u64) ^ (1 << 63)).to_be_bytes()
}

fn unflip(b: &[u8]) -> i64 {
    (u64::from_be_bytes(b.try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

fn float_key(x: f64) -> [u8; 8] {
    // -0.0 and 0.0 are one value.
    let x = if x == 0.0 { 0.0 } else { x };
    let b = x.to_bits();
    let o = if b >> 63 == 0 { b | (1 << 63) } else { !b };
    o.to_be_bytes()
}

fn float_of_key(b: &[u8]) -> f64 {
    let o = u64::from_be_bytes(b.try_into().expect("8 bytes"));
    f64::from_bits(if o >> 63 == 1 { o & !(1 << 63) } else { !o })
}

/// `field | 0 | tag`.
fn prefix(field: &str, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(field.len() + 2 + 16);
    k.extend_from_slice(field.as_bytes());
    k.push(0);
    k.push(tag);
    k
}

fn keyword_value(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// The (tag, value bytes) entries a payload gives a field of `schema`.
fn entries(path: &KeyPath, schema: Schema, payload: &Value) -> Vec<(u8, Vec<u8>)> {
    let mut vs = Vec::new();
    path.values(payload, true, &mut vs);
    let mut out = Vec::new();
    for v in vs {
        match (schema, v) {
            (Schema::Keyword | Schema::Uuid, Value::String(s)) => {
                out.push((b'k', keyword_value(s)))
            }
            (Schema::Integer, Value::Number(n)) => {
                if !n.is_f64()
                    && let Some(i) = n.as_i64()
                {
                    out.push((b'i', flip(i).to_vec()));
                }
                if let Some(x) = n.as_f64() {
                    out.push((b'n', float_key(x).to_vec()));
                }
            }
            (Schema::Float, Value::Number(n)) => {
                if let Some(x) = n.as_f64() {
                    out.push((b'n', float_key(x).to_vec()));
                }
            }
            (Schema::Bool, Value::Bool(b)) => out.push((b'b', vec![u8::from(*b)])),
            (Schema::Datetime, Value::String(s)) => {
                if let Some(t) = parse_datetime(s) {
                    out.push((b'd', flip(t).to_vec()));
                }
            }
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

fn entry_key(field: &str, tag: u8, value: &[u8], slot: u32) -> Vec<u8> {
    let mut k = prefix(field, tag);
    k.extend_from_slice(value);
    k.extend_from_slice(&slot.to_be_bytes());
    k
}

fn parse_payload(p: Option<&str>) -> Value {
    p.and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Object(Default::default()))
}

/// One field condition against the indexes.
enum Leaf {
    Set(RoaringBitmap),
    /// No index answers it.
    NoIndex,
    /// An index answers it, with more slots than the cap.
    Overflow,
}

impl Leaf {
    fn of(complete: bool, set: RoaringBitmap) -> Leaf {
        if complete { Leaf::Set(set) } else { Leaf::Overflow }
    }
}

/// What a filter resolves to over the disk slots.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The slots that may match (`None`: any slot may).
    pub set: Option<RoaringBitmap>,
    /// `set` is exactly the matching slots (no payload check needed).
    pub exact: bool,
    /// Fields the filter tests that have no index (checked by payload).
    pub unindexed: Vec<String>,
    /// Some indexed condition matched more slots than the cap (not collected).
    pub overflow: bool,
}

impl IdMap {
    /// The payload indexes, by field.
    pub fn indexes(&self) -> Vec<(String, Schema)> {
        self.defs.read().iter().map(|(p, s)| (p.text.clone(), *s)).collect()
    }

    /// Reads the index definitions into memory (at open).
    pub(super) fn load_defs(&self) -> Result<(), IdMapError> {
        let mut defs = Vec::new();
        for kv in self.state.prefix(DEF_PREFIX) {
            let (k, v) = kv?;
            let field = std::str::from_utf8(&k[DEF_PREFIX.len()..])
                .map_err(|_| IdMapError::Corrupt("index field name".into()))?;
            let schema = v
                .first()
                .and_then(|&t| Schema::of_tag(t))
                .ok_or_else(|| IdMapError::Corrupt(format!("index {field:?}: schema tag")))?;
            let path = KeyPath::parse(field)
                .map_err(|e| IdMapError::Corrupt(format!("index field: {e}")))?;
            defs.push((path, schema));
        }
        *self.defs.write() = defs;
        Ok(())
    }

    /// The index entry keys `changes` touch and whether each is present
    /// after them: per id, its entries before the changes (read from the
    /// store, once) go and those of its last change come back; a key in
    /// both stays. A freed slot is often refilled by another id in the same
    /// change list, and a batch must not hold one key twice.
    fn index_ops(
        &self,
        changes: &[super::idmap::Change],
    ) -> Result<HashMap<Vec<u8>, bool>, IdMapError> {
        let defs = self.defs.read();
        let mut keys: HashMap<Vec<u8>, bool> = HashMap::new();
        if defs.is_empty() {
            return Ok(keys);
        }
        let mut seen: std::collections::HashSet<Vec<u8>> = Default::default();
        let mut after: HashMap<Vec<u8>, Option<(u32, Option<String>)>> = HashMap::new();
        for c in changes {
            let (id, new) = match c {
                super::idmap::Change::Put { id, slot, payload } => {
                    (id, Some((*slot, payload.clone())))
                }
                super::idmap::Change::Remove { id } => (id, None),
            };
            let k = key(id);
            if seen.insert(k.clone())
                && let Some(slot) = self.get(id)?
            {
                let p = parse_payload(self.payload(id)?.as_deref());
                for (path, schema) in defs.iter() {
                    for (tag, v) in entries(path, *schema, &p) {
                        keys.insert(entry_key(&path.text, tag, &v, slot), false);
                    }
                }
            }
            after.insert(k, new);
        }
        for (slot, payload) in after.values().flatten() {
            let p = parse_payload(payload.as_deref());
            for (path, schema) in defs.iter() {
                for (tag, v) in entries(path, *schema, &p) {
                    keys.insert(entry_key(&path.text, tag, &v, *slot), true);
                }
            }
        }
        Ok(keys)
    }

    /// Writes the index entries of one chunk of changes into its batch.
    pub(super) fn index_changes(
        &self,
        b: &mut fjall::Batch,
        changes: &[super::idmap::Change],
    ) -> Result<(), IdMapError> {
        for (k, present) in self.index_ops(changes)? {
            if present {
                b.insert(&self.pindex, k, Vec::new());
            } else {
                b.remove(&self.pindex, k);
            }
        }
        Ok(())
    }

    /// Writes the index entries of a whole change list (a merge's, maybe
    /// millions) before any of its map changes: the old entries are read
    /// from the map as it was, so an id moved in one chunk and its old slot
    /// refilled in another cannot lose an entry. Idempotent until the map
    /// changes are committed, which come after (a crash in between redoes
    /// the same writes).
    pub(super) fn apply_index_ops(
        &self,
        changes: &[super::idmap::Change],
    ) -> Result<(), IdMapError> {
        let ops = self.index_ops(changes)?;
        let mut b = self.keyspace.batch();
        let mut n = 0usize;
        for (k, present) in ops {
            if present {
                b.insert(&self.pindex, k, Vec::new());
            } else {
                b.remove(&self.pindex, k);
            }
            n += 1;
            if n == super::idmap::APPLY_BATCH_CHANGES {
                b.commit()?;
                b = self.keyspace.batch();
                n = 0;
            }
        }
        b.commit()?;
        Ok(())
    }

    /// Makes an index of `field` over every point in the map, durably.
    /// Returns the entries written. An index that exists with the same
    /// schema is no error (nothing is done); with another schema it is
    /// rebuilt.
    pub fn create_index(&self, field: &str, schema: Schema) -> Result<u64, IdMapError> {
        let path = check_field(field).map_err(IdMapError::Corrupt)?;
        if self.defs.read().iter().any(|(p, s)| p.text == field && *s == schema) {
            return Ok(0);
        }
        self.drop_index(field)?;
        // Entries of an earlier build that a crash cut short (its
        // definition is written last) are cleared first.
        self.clear_entries(field)?;
        if self.defs.read().len() >= INDEXES_MAX {
            return Err(IdMapError::Corrupt(format!(
                "a collection has at most {INDEXES_MAX} payload indexes (INDEXES_MAX)"
            )));
        }
        let mut n = 0u64;
        let mut b = self.keyspace.batch();
        let mut in_batch = 0usize;
        for kv in self.ids.snapshot().iter() {
            let (k, v) = kv.map_err(fjall::Error::from)?;
            if v.len() != 4 {
                return Err(IdMapError::Corrupt("slot value".into()));
            }
            let slot = u32::from_le_bytes(v[..4].try_into().expect("4 bytes"));
            let p = self.payloads.get(&k)?;
            let p = parse_payload(p.as_deref().and_then(|b| std::str::from_utf8(b).ok()));
            for (tag, val) in entries(&path, schema, &p) {
                b.insert(&self.pindex, entry_key(field, tag, &val, slot), Vec::new());
                n += 1;
                in_batch += 1;
            }
            if in_batch >= super::idmap::APPLY_BATCH_CHANGES {
                b.commit()?;
                b = self.keyspace.batch();
                in_batch = 0;
            }
        }
        let mut dk = DEF_PREFIX.to_vec();
        dk.extend_from_slice(field.as_bytes());
        b.insert(&self.state, dk, vec![schema.tag()]);
        b.commit()?;
        self.keyspace.persist(fjall::PersistMode::SyncAll)?;
        self.defs.write().push((path, schema));
        Ok(n)
    }

    /// Removes every entry of `field` (no definition change).
    fn clear_entries(&self, field: &str) -> Result<(), IdMapError> {
        let mut p = field.as_bytes().to_vec();
        p.push(0);
        let mut b = self.keyspace.batch();
        let mut in_batch = 0usize;
        for kv in self.pindex.snapshot().prefix(&p) {
            let (k, _) = kv.map_err(fjall::Error::from)?;
            b.remove(&self.pindex, k.to_vec());
            in_batch += 1;
            if in_batch >= super::idmap::APPLY_BATCH_CHANGES {
                b.commit()?;
                b = self.keyspace.batch();
                in_batch = 0;
            }
        }
        b.commit()?;
        Ok(())
    }

    /// Removes the index of `field` (none is no error), durably; returns
    /// whether there was one.
    pub fn drop_index(&self, field: &str) -> Result<bool, IdMapError> {
        let had = self.defs.read().iter().any(|(p, _)| p.text == field);
        if !had {
            return Ok(false);
        }
        // The definition goes first, durably: entries without one are never
        // read (and a later create clears them), while a definition whose
        // entries are half gone would answer wrongly.
        let mut dk = DEF_PREFIX.to_vec();
        dk.extend_from_slice(field.as_bytes());
        self.state.remove(dk)?;
        self.keyspace.persist(fjall::PersistMode::SyncAll)?;
        self.defs.write().retain(|(p, _)| p.text != field);
        self.clear_entries(field)?;
        self.keyspace.persist(fjall::PersistMode::SyncAll)?;
        Ok(true)
    }

    /// Entries of `field`'s index (all its values), counted up to `cap`.
    pub fn index_entries(&self, field: &str, cap: usize) -> Result<usize, IdMapError> {
        let mut p = field.as_bytes().to_vec();
        p.push(0);
        let mut n = 0;
        for kv in self.pindex.prefix(&p) {
            kv?;
            n += 1;
            if n >= cap {
                break;
            }
        }
        Ok(n)
    }

    /// Slots whose entries under `field|0|tag|value` exist (`None` past `cap`).
    fn scan_exact(
        &self,
        field: &str,
        tag: u8,
        value: &[u8],
        cap: usize,
        out: &mut RoaringBitmap,
    ) -> Result<bool, IdMapError> {
        let mut p = prefix(field, tag);
        p.extend_from_slice(value);
        let mut n = 0;
        for kv in self.pindex.prefix(&p) {
            let (k, _) = kv?;
            if k.len() != p.len() + 4 {
                continue;
            }
            out.insert(u32::from_be_bytes(k[k.len() - 4..].try_into().expect("4 bytes")));
            n += 1;
            if n > cap {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Slots with an 8-byte `tag` value for which `keep` holds, between
    /// the encoded `lo..=hi` (`false` past `cap`).
    #[allow(clippy::too_many_arguments)]
    fn scan_range(
        &self,
        field: &str,
        tag: u8,
        lo: [u8; 8],
        hi: [u8; 8],
        keep: &dyn Fn(&[u8]) -> bool,
        cap: usize,
        out: &mut RoaringBitmap,
    ) -> Result<bool, IdMapError> {
        let p = prefix(field, tag);
        let mut from = p.clone();
        from.extend_from_slice(&lo);
        let mut to = p.clone();
        to.extend_from_slice(&hi);
        to.extend_from_slice(&[0xff; 4]);
        let mut n = 0;
        for kv in self.pindex.range(from..=to) {
            let (k, _) = kv?;
            if k.len() != p.len() + 12 {
                continue;
            }
            if keep(&k[p.len()..p.len() + 8]) {
                out.insert(u32::from_be_bytes(k[k.len() - 4..].try_into().expect("4 bytes")));
                n += 1;
                if n > cap {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The exact set of slots a field condition holds for, when an index
    /// answers it (`None`: it cannot, or more than `cap` slots match).
    fn leaf(&self, key: &KeyPath, test: &FieldTest, cap: usize) -> Result<Leaf, IdMapError> {
        let defs = self.defs.read();
        let Some((_, schema)) = defs.iter().find(|(p, _)| p.text == key.text) else {
            return Ok(Leaf::NoIndex);
        };
        let schema = *schema;
        drop(defs);
        let f = key.as_str();
        let mut out = RoaringBitmap::new();
        match test {
            FieldTest::Match(values) => {
                for v in values {
                    let (tag, bytes) = match (schema, v) {
                        (Schema::Keyword | Schema::Uuid, Scalar::Str(s)) => {
                            (b'k', keyword_value(s))
                        }
                        (Schema::Integer, Scalar::Int(i)) => (b'i', flip(*i).to_vec()),
                        (Schema::Bool, Scalar::Bool(b)) => (b'b', vec![u8::from(*b)]),
                        // A value of another type than the index's: the
                        // points holding it are not in the index.
                        _ => return Ok(Leaf::NoIndex),
                    };
                    if !self.scan_exact(f, tag, &bytes, cap, &mut out)? || out.len() > cap as u64 {
                        return Ok(Leaf::Overflow);
                    }
                }
                Ok(Leaf::Set(out))
            }
            FieldTest::Range(b) if matches!(schema, Schema::Integer | Schema::Float) => {
                let (lo, hi) = float_span(b);
                let keep = |k: &[u8]| b.holds(float_of_key(k));
                Ok(Leaf::of(self.scan_range(f, b'n', lo, hi, &keep, cap, &mut out)?, out))
            }
            FieldTest::DateRange(b) if schema == Schema::Datetime => {
                let lo = flip(b.gt.into_iter().chain(b.gte).max().unwrap_or(i64::MIN));
                let hi = flip(b.lt.into_iter().chain(b.lte).min().unwrap_or(i64::MAX));
                let keep = |k: &[u8]| b.holds(unflip(k));
                Ok(Leaf::of(self.scan_range(f, b'd', lo, hi, &keep, cap, &mut out)?, out))
            }
            _ => Ok(Leaf::NoIndex),
        }
    }

    /// What `filter` resolves to over slots `0..slots` of the applied
    /// generation, collecting at most `cap` slots per condition.
    pub fn resolve(&self, filter: &Filter, slots: u32, cap: usize) -> Result<Resolved, IdMapError> {
        let mut unindexed = Vec::new();
        let mut r = Resolver { map: self, slots, cap, overflow: false };
        let (set, exact) = r.filter(filter, &mut unindexed)?;
        unindexed.sort();
        unindexed.dedup();
        Ok(Resolved { set, exact, unindexed, overflow: r.overflow })
    }
}

/// One resolution: the map, the slot range, the per-condition cap, and
/// whether a condition overflowed it.
struct Resolver<'a> {
    map: &'a IdMap,
    slots: u32,
    cap: usize,
    overflow: bool,
}

impl Resolver<'_> {
    fn filter(
        &mut self,
        f: &Filter,
        unindexed: &mut Vec<String>,
    ) -> Result<(Option<RoaringBitmap>, bool), IdMapError> {
        let mut set: Option<RoaringBitmap> = None;
        let mut exact = true;
        let and = |set: &mut Option<RoaringBitmap>, s: RoaringBitmap| {
            *set = Some(match set.take() {
                Some(a) => a & s,
                None => s,
            });
        };
        for c in &f.must {
            let (s, e) = self.cond(c, unindexed)?;
            exact &= e;
            if let Some(s) = s {
                and(&mut set, s);
            }
        }
        for c in &f.must_not {
            let (s, e) = self.cond(c, unindexed)?;
            match s {
                Some(s) if e => {
                    let mut all = RoaringBitmap::new();
                    all.insert_range(0..self.slots);
                    and(&mut set, all - s);
                }
                _ => exact = false,
            }
        }
        if !f.should.is_empty() {
            let mut union = Some(RoaringBitmap::new());
            for c in &f.should {
                let (s, e) = self.cond(c, unindexed)?;
                exact &= e;
                match (s, union.as_mut()) {
                    (Some(s), Some(u)) => *u |= s,
                    _ => union = None,
                }
            }
            if let Some(u) = union {
                and(&mut set, u);
            }
        }
        if let Some((cs, _)) = &f.min_should {
            exact = false;
            for c in cs {
                self.cond(c, unindexed)?;
            }
        }
        Ok((set, exact))
    }

    fn cond(
        &mut self,
        c: &Cond,
        unindexed: &mut Vec<String>,
    ) -> Result<(Option<RoaringBitmap>, bool), IdMapError> {
        match c {
            Cond::Filter(f) => self.filter(f, unindexed),
            Cond::HasId(ids) => {
                let mut s = RoaringBitmap::new();
                for id in ids {
                    if let Some(slot) = self.map.get(id)? {
                        s.insert(slot);
                    }
                }
                Ok((Some(s), true))
            }
            Cond::Nested { key, .. } => {
                unindexed.push(key.text.clone());
                Ok((None, false))
            }
            Cond::Field { key, test } => match self.map.leaf(key, test, self.cap)? {
                Leaf::Set(s) => Ok((Some(s), true)),
                Leaf::Overflow => {
                    self.overflow = true;
                    Ok((None, false))
                }
                Leaf::NoIndex => {
                    unindexed.push(key.text.clone());
                    Ok((None, false))
                }
            },
        }
    }
}

/// The encoded span of float keys a numeric range can hold.
fn float_span(b: &Bounds<f64>) -> ([u8; 8], [u8; 8]) {
    let lo = b.gt.into_iter().chain(b.gte).fold(f64::NEG_INFINITY, f64::max);
    let hi = b.lt.into_iter().chain(b.lte).fold(f64::INFINITY, f64::min);
    (float_key(lo), float_key(hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collection::filter::Filter;
    use crate::collection::idmap::Change;
    use crate::collection::ids::ExternalId;
    use crate::format::FileIdent;

    fn kw_slots(map: &IdMap, value: &str) -> Vec<u32> {
        let f = Filter::parse(
            &serde_json::json!({"must": [{"key": "kw", "match": {"value": value}}]}),
            "f",
        )
        .unwrap();
        let r = map.resolve(&f, 1 << 20, usize::MAX).unwrap();
        assert!(r.exact);
        r.set.unwrap().iter().collect()
    }

    /// A merge's change list longer than one batch: an id moved in the last
    /// chunk while another id took its old slot in the first keeps both
    /// entries (computed over the whole list, not per chunk).
    #[test]
    fn index_entries_survive_a_slot_refilled_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let map = IdMap::open(dir.path()).unwrap();
        map.create_index("kw", Schema::Keyword).unwrap();
        let (a, b) = (ExternalId::Num(1), ExternalId::Num(2));
        let x = Some(r#"{"kw": "x"}"#.to_string());
        let ident = |g| FileIdent { build_id: 7, generation: g };
        map.apply(&[Change::Put { id: a.clone(), slot: 5, payload: x.clone() }], ident(1)).unwrap();
        assert_eq!(kw_slots(&map, "x"), vec![5]);
        let mut changes = vec![Change::Put { id: b, slot: 5, payload: x.clone() }];
        for i in 0..APPLY_FILLER {
            changes.push(Change::Put {
                id: ExternalId::Num(1000 + i),
                slot: 1000 + i as u32,
                payload: None,
            });
        }
        changes.push(Change::Put { id: a, slot: 9, payload: x });
        map.apply(&changes, ident(2)).unwrap();
        assert_eq!(kw_slots(&map, "x"), vec![5, 9]);
    }

    const APPLY_FILLER: u64 = super::super::idmap::APPLY_BATCH_CHANGES as u64;

    #[test]
    fn float_keys_sort_like_the_numbers() {
        let xs = [f64::NEG_INFINITY, -1e300, -2.5, -1.0, -0.0, 0.0, 1e-300, 1.0, 2.5, 1e300];
        for w in xs.windows(2) {
            assert!(float_key(w[0]) <= float_key(w[1]), "{} {}", w[0], w[1]);
            assert_eq!(float_of_key(&float_key(w[1])), if w[1] == 0.0 { 0.0 } else { w[1] });
        }
        for w in [i64::MIN, -5, 0, 5, i64::MAX].windows(2) {
            assert!(flip(w[0]) < flip(w[1]));
            assert_eq!(unflip(&flip(w[0])), w[0]);
        }
    }
}

//! Payload filters in Qdrant's filter language: parsed from JSON into a
//! [`Filter`], evaluated against a point's id and payload. The semantics
//! follow Qdrant's (and its client's local mode, the tests' oracle):
//!
//! - a key is a path: `a.b`, `a[].b` (every element), `a[2]`, `"a.b"`
//!   (a quoted key holding a dot); an array at the end of a path is
//!   unwrapped one level, so a condition holds when any element satisfies it;
//! - `match` compares keywords, integers and booleans by type (a float
//!   payload value never matches, `true` is not `1`); `except` holds for a
//!   non-null value outside the list;
//! - `range` holds for a number (never a boolean) within the bounds, or,
//!   when the bounds are date-times, for a string that parses as one
//!   (RFC 3339 and the spellings Qdrant accepts; no offset means UTC);
//! - `is_empty`: the key is missing, null or `[]`; `is_null`: a value is
//!   null (or an array holding a null); `values_count` counts an array's
//!   elements (a scalar is one);
//! - `must` all, `should` any (an empty list is no constraint), `must_not`
//!   none, `min_should` at least `min_count`; `nested` applies a filter to
//!   each object of an array.
//!
//! Anything else (geo, full-text, `has_vector`, ...) is refused by name.

use std::fmt;

use serde_json::{Map, Value};

use super::ids::ExternalId;

/// Deepest nesting of filters accepted (a request is bounded, so is its recursion).
pub const FILTER_DEPTH_MAX: usize = 16;
/// Most conditions in one filter, counted through every level.
pub const FILTER_CONDITIONS_MAX: usize = 1024;
/// Most values in one `any`, `except` or `has_id` list.
pub const FILTER_LIST_MAX: usize = 10_000;

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
    /// `[]`: every element.
    All,
}

/// A parsed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPath {
    pub text: String,
    pub segs: Vec<Seg>,
}

impl KeyPath {
    /// A path in Qdrant's syntax.
    pub fn parse(text: &str) -> Result<KeyPath, String> {
        let bad = |why: &str| format!("key {text:?}: {why}");
        let mut segs = Vec::new();
        let b = text.as_bytes();
        let mut i = 0;
        if b.is_empty() {
            return Err(bad("empty"));
        }
        loop {
            // A key: quoted, or up to the next '.' or '['.
            if b[i] == b'"' {
                let end = text[i + 1..].find('"').ok_or_else(|| bad("unclosed quote"))? + i + 1;
                segs.push(Seg::Key(text[i + 1..end].to_string()));
                i = end + 1;
            } else {
                let end = text[i..].find(['.', '[']).map_or(b.len(), |e| e + i);
                if end == i {
                    return Err(bad("an empty key"));
                }
                segs.push(Seg::Key(text[i..end].to_string()));
                i = end;
            }
            while i < b.len() && b[i] == b'[' {
                let end = text[i..].find(']').ok_or_else(|| bad("unclosed '['"))? + i;
                let inner = &text[i + 1..end];
                if inner.is_empty() {
                    segs.push(Seg::All);
                } else {
                    let n: usize = inner
                        .parse()
                        .map_err(|_| bad("an index is a non-negative integer or empty"))?;
                    segs.push(Seg::Index(n));
                }
                i = end + 1;
            }
            if i == b.len() {
                break;
            }
            if b[i] != b'.' || i + 1 == b.len() {
                return Err(bad("keys are separated by '.'"));
            }
            i += 1;
        }
        Ok(KeyPath { text: text.to_string(), segs })
    }

    /// The values the path selects (`flat`: an array at the end is
    /// unwrapped one level).
    pub fn values<'a>(&self, payload: &'a Value, flat: bool, out: &mut Vec<&'a Value>) {
        fn walk<'a>(v: &'a Value, segs: &[Seg], flat: bool, out: &mut Vec<&'a Value>) {
            let Some((first, rest)) = segs.split_first() else {
                match v {
                    Value::Array(a) if flat => out.extend(a.iter()),
                    _ => out.push(v),
                }
                return;
            };
            match (first, v) {
                (Seg::Key(k), Value::Object(o)) => {
                    if let Some(x) = o.get(k) {
                        walk(x, rest, flat, out);
                    }
                }
                (Seg::Index(i), Value::Array(a)) => {
                    if let Some(x) = a.get(*i) {
                        walk(x, rest, flat, out);
                    }
                }
                (Seg::All, Value::Array(a)) => {
                    for x in a {
                        walk(x, rest, flat, out);
                    }
                }
                _ => {}
            }
        }
        walk(payload, &self.segs, flat, out);
    }

    /// The field name a payload index is keyed by: the path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A value `match` compares with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl Scalar {
    fn parse(v: &Value, at: &str) -> Result<Scalar, String> {
        match v {
            Value::Bool(b) => Ok(Scalar::Bool(*b)),
            Value::String(s) => Ok(Scalar::Str(s.clone())),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Scalar::Int(i)),
                None => Err(format!(
                    "{at}: {n} is not a 64-bit integer (match takes keywords, integers and booleans)"
                )),
            },
            other => Err(format!(
                "{at}: match takes a keyword, an integer or a boolean, not {}",
                kind(other)
            )),
        }
    }

    /// Whether a payload value equals this (by type: 1.0 is not 1, true is not 1).
    pub fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            (Scalar::Str(a), Value::String(b)) => a == b,
            (Scalar::Int(a), Value::Number(n)) => {
                // Integers only: a float payload value never matches.
                if n.is_f64() {
                    false
                } else if let Some(i) = n.as_i64() {
                    i == *a
                } else {
                    false
                }
            }
            _ => false,
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Bounds of a `range` (numbers, or date-times as microseconds since the epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bounds<T> {
    pub gt: Option<T>,
    pub gte: Option<T>,
    pub lt: Option<T>,
    pub lte: Option<T>,
}

impl<T: PartialOrd + Copy> Bounds<T> {
    pub fn holds(&self, x: T) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// What a field condition tests.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldTest {
    /// `match.value` (one) or `match.any` (several).
    Match(Vec<Scalar>),
    Except(Vec<Scalar>),
    Range(Bounds<f64>),
    DateRange(Bounds<i64>),
    ValuesCount(Bounds<i64>),
    IsEmpty(bool),
    IsNull(bool),
}

/// One condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    Field { key: KeyPath, test: FieldTest },
    HasId(Vec<ExternalId>),
    Nested { key: KeyPath, filter: Box<Filter> },
    Filter(Box<Filter>),
}

/// A filter: every `must`, any `should` (if any), no `must_not`, and at
/// least `min_should.1` of `min_should.0`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Cond>,
    pub should: Vec<Cond>,
    pub must_not: Vec<Cond>,
    pub min_should: Option<(Vec<Cond>, usize)>,
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "filter ({} must, {} should, {} must_not)",
            self.must.len(),
            self.should.len(),
            self.must_not.len()
        )
    }
}

struct Parser {
    conditions: usize,
}

impl Filter {
    /// Parses a filter object; errors name the path of the bad part,
    /// starting with `at` (e.g. "filter").
    pub fn parse(v: &Value, at: &str) -> Result<Filter, String> {
        Parser { conditions: 0 }.filter(v, at, 0)
    }

    /// Whether the point `id` with `payload` (a JSON object; none is `{}`) passes.
    pub fn matches(&self, id: &ExternalId, payload: &Value) -> bool {
        self.check(Some(id), payload)
    }

    fn check(&self, id: Option<&ExternalId>, payload: &Value) -> bool {
        self.must.iter().all(|c| c.check(id, payload))
            && !self.must_not.iter().any(|c| c.check(id, payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.check(id, payload)))
            && self
                .min_should
                .as_ref()
                .is_none_or(|(cs, n)| cs.iter().filter(|c| c.check(id, payload)).count() >= *n)
    }

    /// Every field path the filter tests (for the planner and the stats).
    pub fn keys(&self) -> Vec<&str> {
        let mut out = Vec::new();
        fn walk<'a>(f: &'a Filter, out: &mut Vec<&'a str>) {
            let all = f
                .must
                .iter()
                .chain(&f.should)
                .chain(&f.must_not)
                .chain(f.min_should.iter().flat_map(|m| m.0.iter()));
            for c in all {
                match c {
                    Cond::Field { key, .. } => out.push(key.as_str()),
                    Cond::Nested { key, .. } => out.push(key.as_str()),
                    Cond::Filter(f) => walk(f, out),
                    Cond::HasId(_) => {}
                }
            }
        }
        walk(self, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Cond {
    fn check(&self, id: Option<&ExternalId>, payload: &Value) -> bool {
        match self {
            Cond::HasId(ids) => id.is_some_and(|id| ids.contains(id)),
            Cond::Filter(f) => f.check(id, payload),
            Cond::Nested { key, filter } => {
                let mut vs = Vec::new();
                key.values(payload, false, &mut vs);
                vs.iter().any(|v| match v {
                    Value::Array(a) => a.iter().any(|e| e.is_object() && filter.check(None, e)),
                    _ => false,
                })
            }
            Cond::Field { key, test } => {
                let mut vs = Vec::new();
                match test {
                    FieldTest::IsEmpty(want) => {
                        key.values(payload, false, &mut vs);
                        let empty = vs.iter().all(|v| match v {
                            Value::Null => true,
                            Value::Array(a) => a.is_empty(),
                            _ => false,
                        });
                        empty == *want
                    }
                    FieldTest::IsNull(want) => {
                        key.values(payload, false, &mut vs);
                        let null = vs.iter().any(|v| match v {
                            Value::Null => true,
                            Value::Array(a) => a.iter().any(Value::is_null),
                            _ => false,
                        });
                        null == *want
                    }
                    FieldTest::ValuesCount(b) => {
                        key.values(payload, false, &mut vs);
                        let count = |v: &Value| match v {
                            Value::Null => 0,
                            Value::Array(a) => a.len() as i64,
                            _ => 1,
                        };
                        if vs.iter().all(|v| v.is_null()) {
                            b.holds(0)
                        } else {
                            vs.iter().any(|v| b.holds(count(v)))
                        }
                    }
                    FieldTest::Match(any) => {
                        key.values(payload, true, &mut vs);
                        vs.iter().any(|v| any.iter().any(|s| s.matches(v)))
                    }
                    FieldTest::Except(none) => {
                        key.values(payload, true, &mut vs);
                        vs.iter().any(|v| !v.is_null() && !none.iter().any(|s| s.matches(v)))
                    }
                    FieldTest::Range(b) => {
                        key.values(payload, true, &mut vs);
                        vs.iter().any(|v| number(v).is_some_and(|x| b.holds(x)))
                    }
                    FieldTest::DateRange(b) => {
                        key.values(payload, true, &mut vs);
                        vs.iter().any(|v| {
                            v.as_str().and_then(parse_datetime).is_some_and(|t| b.holds(t))
                        })
                    }
                }
            }
        }
    }
}

/// A payload number as f64 (booleans are not numbers).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Parses a date-time the way Qdrant does (RFC 3339, a space for the `T`,
/// no seconds, a date alone, no offset meaning UTC, an hour-only offset):
/// microseconds since the Unix epoch, or `None`.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let mut t = s.to_string();
    if let Some(x) = t.strip_suffix(" UTC") {
        t = format!("{x}+00:00");
    } else if t.ends_with(['z', 'Z']) {
        t.pop();
        t.push_str("+00:00");
    }
    if let Some(t) = parse_formats(&t) {
        return Some(t);
    }
    // An hour-only offset ("+01"): tried again as "+01:00".
    let n = t.len();
    if n > 3 {
        let tail = &t.as_bytes()[n - 3..];
        if (tail[0] == b'+' || tail[0] == b'-')
            && tail[1].is_ascii_digit()
            && tail[2].is_ascii_digit()
        {
            return parse_formats(&format!("{t}:00"));
        }
    }
    None
}

fn parse_formats(t: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    const ZONED: [&str; 8] = [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f %:z",
        "%Y-%m-%d %H:%M:%S%.f %:z",
        "%Y-%m-%dT%H:%M:%S%.f %z",
        "%Y-%m-%d %H:%M:%S%.f %z",
    ];
    for f in ZONED {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Some(d.timestamp_micros());
        }
    }
    const NAIVE: [&str; 4] =
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
    for f in NAIVE {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(d.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_micros())
}

fn obj<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("{at}: an object, not {}", kind(v)))
}

impl Parser {
    fn filter(&mut self, v: &Value, at: &str, depth: usize) -> Result<Filter, String> {
        if depth > FILTER_DEPTH_MAX {
            return Err(format!(
                "{at}: filters nest deeper than {FILTER_DEPTH_MAX} (FILTER_DEPTH_MAX)"
            ));
        }
        let o = obj(v, at)?;
        let mut f = Filter::default();
        for (k, x) in o {
            let here = format!("{at}.{k}");
            match k.as_str() {
                "must" => f.must = self.conds(x, &here, depth)?,
                "should" => f.should = self.conds(x, &here, depth)?,
                "must_not" => f.must_not = self.conds(x, &here, depth)?,
                "min_should" => {
                    if x.is_null() {
                        continue;
                    }
                    let m = obj(x, &here)?;
                    let mut conds = None;
                    let mut count = None;
                    for (mk, mx) in m {
                        match mk.as_str() {
                            "conditions" => {
                                conds =
                                    Some(self.conds(mx, &format!("{here}.conditions"), depth)?)
                            }
                            "min_count" => {
                                count = Some(mx.as_u64().filter(|&n| n >= 1).ok_or_else(|| {
                                    format!("{here}.min_count: an integer of at least 1")
                                })? as usize)
                            }
                            other => return Err(format!("{here}.{other}: unknown field")),
                        }
                    }
                    match (conds, count) {
                        (Some(c), Some(n)) => f.min_should = Some((c, n)),
                        _ => return Err(format!("{here}: needs conditions and min_count")),
                    }
                }
                other => {
                    return Err(format!(
                        "{at}.{other}: unknown field (a filter has must, should, must_not, min_should)"
                    ));
                }
            }
        }
        Ok(f)
    }

    fn conds(&mut self, v: &Value, at: &str, depth: usize) -> Result<Vec<Cond>, String> {
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, c)| self.cond(c, &format!("{at}[{i}]"), depth))
                .collect(),
            // Qdrant takes a single condition in place of a list.
            c => Ok(vec![self.cond(c, at, depth)?]),
        }
    }

    fn cond(&mut self, v: &Value, at: &str, depth: usize) -> Result<Cond, String> {
        self.conditions += 1;
        if self.conditions > FILTER_CONDITIONS_MAX {
            return Err(format!(
                "{at}: more than {FILTER_CONDITIONS_MAX} conditions (FILTER_CONDITIONS_MAX)"
            ));
        }
        let o = obj(v, at)?;
        if o.contains_key("must")
            || o.contains_key("should")
            || o.contains_key("must_not")
            || o.contains_key("min_should")
        {
            return Ok(Cond::Filter(Box::new(self.filter(v, at, depth + 1)?)));
        }
        if let Some(x) = o.get("has_id") {
            if o.len() != 1 {
                return Err(format!("{at}: has_id stands alone in its condition"));
            }
            let a = x.as_array().ok_or_else(|| format!("{at}.has_id: a list of ids"))?;
            if a.len() > FILTER_LIST_MAX {
                return Err(format!(
                    "{at}.has_id: more than {FILTER_LIST_MAX} ids (FILTER_LIST_MAX)"
                ));
            }
            let ids = a
                .iter()
                .enumerate()
                .map(|(i, v)| id_of(v).map_err(|e| format!("{at}.has_id[{i}]: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Cond::HasId(ids));
        }
        for (name, test) in [("is_empty", true), ("is_null", false)] {
            if let Some(x) = o.get(name) {
                if o.len() != 1 {
                    return Err(format!("{at}: {name} stands alone in its condition"));
                }
                let k = obj(x, &format!("{at}.{name}"))?;
                let key = k
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{at}.{name}.key: a string"))?;
                if let Some(other) = k.keys().find(|k| *k != "key") {
                    return Err(format!("{at}.{name}.{other}: unknown field"));
                }
                let key = KeyPath::parse(key).map_err(|e| format!("{at}.{name}.{e}"))?;
                let t = if test { FieldTest::IsEmpty(true) } else { FieldTest::IsNull(true) };
                return Ok(Cond::Field { key, test: t });
            }
        }
        if let Some(x) = o.get("nested") {
            if o.len() != 1 {
                return Err(format!("{at}: nested stands alone in its condition"));
            }
            let n = obj(x, &format!("{at}.nested"))?;
            let mut key = n
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}.nested.key: a string"))?;
            if key.len() > 2 && key.ends_with("[]") {
                key = &key[..key.len() - 2];
            }
            let fv = n.get("filter").ok_or_else(|| format!("{at}.nested.filter: required"))?;
            if let Some(other) = n.keys().find(|k| *k != "key" && *k != "filter") {
                return Err(format!("{at}.nested.{other}: unknown field"));
            }
            let key = KeyPath::parse(key).map_err(|e| format!("{at}.nested.{e}"))?;
            let filter = self.filter(fv, &format!("{at}.nested.filter"), depth + 1)?;
            if has_id_in(&filter) {
                return Err(format!("{at}.nested.filter: has_id is not allowed inside nested"));
            }
            return Ok(Cond::Nested { key, filter: Box::new(filter) });
        }
        let Some(key) = o.get("key") else {
            let name = o.keys().next().map_or("(empty)", String::as_str);
            return Err(format!(
                "{at}: {name:?} is not a supported condition (supported: key with match, range, values_count, is_empty, is_null; has_id, is_empty, is_null, nested, and nested filters)"
            ));
        };
        let key = key.as_str().ok_or_else(|| format!("{at}.key: a string"))?;
        let key = KeyPath::parse(key).map_err(|e| format!("{at}.{e}"))?;
        let mut test = None;
        for (k, x) in o {
            if k == "key" || x.is_null() {
                continue;
            }
            let here = format!("{at}.{k}");
            let t = match k.as_str() {
                "match" => self.matcher(x, &here)?,
                "range" => range(x, &here)?,
                "values_count" => {
                    let b = bounds(x, &here, |v| v.as_i64())?;
                    FieldTest::ValuesCount(b)
                }
                "is_empty" => {
                    FieldTest::IsEmpty(x.as_bool().ok_or_else(|| format!("{here}: true or false"))?)
                }
                "is_null" => {
                    FieldTest::IsNull(x.as_bool().ok_or_else(|| format!("{here}: true or false"))?)
                }
                "geo_bounding_box" | "geo_radius" | "geo_polygon" => {
                    return Err(format!("{here}: geo conditions are not supported"));
                }
                other => return Err(format!("{at}.{other}: not a supported field condition")),
            };
            if test.replace(t).is_some() {
                return Err(format!("{at}: one test per field condition"));
            }
        }
        let test = test.ok_or_else(|| {
            format!("{at}: a field condition needs match, range, values_count, is_empty or is_null")
        })?;
        Ok(Cond::Field { key, test })
    }

    fn matcher(&mut self, v: &Value, at: &str) -> Result<FieldTest, String> {
        let o = obj(v, at)?;
        if o.len() != 1 {
            return Err(format!("{at}: one of value, any, except"));
        }
        let (k, x) = o.iter().next().expect("one entry");
        let list = |x: &Value, here: &str| -> Result<Vec<Scalar>, String> {
            let a = x.as_array().ok_or_else(|| format!("{here}: a list"))?;
            if a.len() > FILTER_LIST_MAX {
                return Err(format!(
                    "{here}: more than {FILTER_LIST_MAX} values (FILTER_LIST_MAX)"
                ));
            }
            a.iter()
                .enumerate()
                .map(|(i, v)| match v {
                    // Qdrant's any/except lists hold keywords or integers.
                    Value::Bool(_) => Err(format!("{here}[{i}]: keywords or integers")),
                    v => Scalar::parse(v, &format!("{here}[{i}]")),
                })
                .collect()
        };
        match k.as_str() {
            "value" => Ok(FieldTest::Match(vec![Scalar::parse(x, &format!("{at}.value"))?])),
            "any" => Ok(FieldTest::Match(list(x, &format!("{at}.any"))?)),
            "except" => Ok(FieldTest::Except(list(x, &format!("{at}.except"))?)),
            "text" | "text_any" | "phrase" | "prefix" | "substring" => {
                Err(format!("{at}.{k}: full-text and prefix matching are not supported"))
            }
            other => Err(format!("{at}.{other}: not a supported match (value, any, except)")),
        }
    }
}

fn has_id_in(f: &Filter) -> bool {
    f.must
        .iter()
        .chain(&f.should)
        .chain(&f.must_not)
        .chain(f.min_should.iter().flat_map(|m| m.0.iter()))
        .any(|c| match c {
            Cond::HasId(_) => true,
            Cond::Filter(f) => has_id_in(f),
            _ => false,
        })
}

fn id_of(v: &Value) -> Result<ExternalId, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(ExternalId::Num)
            .ok_or_else(|| format!("{n} is not an unsigned 64-bit integer")),
        Value::String(s) => ExternalId::from_string(s).map_err(|e| e.to_string()),
        other => Err(format!("an id is an integer or a string, not {}", kind(other))),
    }
}

fn bounds<T>(v: &Value, at: &str, conv: impl Fn(&Value) -> Option<T>) -> Result<Bounds<T>, String> {
    let o = obj(v, at)?;
    let mut b = Bounds { gt: None, gte: None, lt: None, lte: None };
    for (k, x) in o {
        if x.is_null() {
            continue;
        }
        let val = conv(x).ok_or_else(|| format!("{at}.{k}: {x} is not a valid bound"))?;
        match k.as_str() {
            "gt" => b.gt = Some(val),
            "gte" => b.gte = Some(val),
            "lt" => b.lt = Some(val),
            "lte" => b.lte = Some(val),
            other => return Err(format!("{at}.{other}: unknown bound (gt, gte, lt, lte)")),
        }
    }
    Ok(b)
}

fn range(v: &Value, at: &str) -> Result<FieldTest, String> {
    let o = obj(v, at)?;
    let strings = o.values().filter(|x| x.is_string()).count();
    let numbers = o.values().filter(|x| x.is_number()).count();
    if strings > 0 && numbers > 0 {
        return Err(format!("{at}: bounds are all numbers or all date-times"));
    }
    if strings > 0 {
        Ok(FieldTest::DateRange(bounds(v, at, |x| x.as_str().and_then(parse_datetime))?))
    } else {
        Ok(FieldTest::Range(bounds(v, at, |x| x.as_f64().filter(|f| f.is_finite()))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Filter {
        Filter::parse(&v, "filter").unwrap()
    }

    fn m(filter: &Value, payload: Value) -> bool {
        f(filter.clone()).matches(&ExternalId::Num(7), &payload)
    }

    #[test]
    fn paths_parse_and_select() {
        let p = KeyPath::parse("a.b[].c").unwrap();
        assert_eq!(
            p.segs,
            vec![Seg::Key("a".into()), Seg::Key("b".into()), Seg::All, Seg::Key("c".into())]
        );
        let doc = json!({"a": {"b": [{"c": 1}, {"c": [2, 3]}, {"d": 4}]}});
        let mut out = Vec::new();
        p.values(&doc, true, &mut out);
        assert_eq!(out, vec![&json!(1), &json!(2), &json!(3)]);
        assert_eq!(KeyPath::parse("\"a.b\".c").unwrap().segs[0], Seg::Key("a.b".into()));
        assert_eq!(KeyPath::parse("x[2]").unwrap().segs[1], Seg::Index(2));
        for bad in ["", "a.", ".a", "a[x]", "a[", "a..b", "\"a"] {
            assert!(KeyPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn match_is_typed_and_arrays_match_any_element() {
        let c = json!({"must": [{"key": "n", "match": {"value": 1}}]});
        assert!(m(&c, json!({"n": 1})));
        assert!(!m(&c, json!({"n": 1.0})));
        assert!(!m(&c, json!({"n": true})));
        assert!(m(&c, json!({"n": [3, 1]})));
        assert!(!m(&c, json!({})));
        let b = json!({"must": {"key": "b", "match": {"value": true}}});
        assert!(m(&b, json!({"b": true})) && !m(&b, json!({"b": 1})));
        let any = json!({"must": [{"key": "t", "match": {"any": ["x", "y"]}}]});
        assert!(m(&any, json!({"t": ["z", "y"]})) && !m(&any, json!({"t": "z"})));
        let ex = json!({"must": [{"key": "t", "match": {"except": ["x"]}}]});
        assert!(m(&ex, json!({"t": ["x", "y"]})));
        assert!(!m(&ex, json!({"t": "x"})));
        assert!(!m(&ex, json!({"t": null})));
        assert!(!m(&ex, json!({})));
        assert!(m(&ex, json!({"t": 5})));
    }

    #[test]
    fn ranges_numbers_and_datetimes() {
        let r = json!({"must": [{"key": "p", "range": {"gte": 1.5, "lt": 3}}]});
        assert!(m(&r, json!({"p": 1.5})) && m(&r, json!({"p": 2})) && !m(&r, json!({"p": 3})));
        assert!(!m(&r, json!({"p": true})) && !m(&r, json!({"p": "2"})));
        let d = json!({"must": [{"key": "t", "range": {"gt": "2024-01-01T00:00:00Z", "lte": "2024-02-01"}}]});
        assert!(m(&d, json!({"t": "2024-01-15T10:00:00+01:00"})));
        assert!(m(&d, json!({"t": "2024-02-01 00:00:00"})));
        assert!(!m(&d, json!({"t": "2024-01-01T00:00:00Z"})));
        assert!(!m(&d, json!({"t": "not a date"})));
        assert_eq!(parse_datetime("2024-01-01T01:00:00+01"), parse_datetime("2024-01-01"));
        assert_eq!(parse_datetime("2024-01-01T00:00"), parse_datetime("2024-01-01 00:00:00.000Z"));
    }

    #[test]
    fn empty_null_and_counts() {
        let e = json!({"must": [{"is_empty": {"key": "a"}}]});
        assert!(m(&e, json!({})) && m(&e, json!({"a": null})) && m(&e, json!({"a": []})));
        assert!(!m(&e, json!({"a": [null]})) && !m(&e, json!({"a": 0})));
        let n = json!({"must": [{"is_null": {"key": "a"}}]});
        assert!(m(&n, json!({"a": null})) && m(&n, json!({"a": [1, null]})));
        assert!(!m(&n, json!({})) && !m(&n, json!({"a": []})));
        let c = json!({"must": [{"key": "a", "values_count": {"gte": 2}}]});
        assert!(m(&c, json!({"a": [1, 2]})) && !m(&c, json!({"a": 1})) && !m(&c, json!({})));
        let z = json!({"must": [{"key": "a", "values_count": {"lt": 1}}]});
        assert!(m(&z, json!({})) && m(&z, json!({"a": null})));
    }

    #[test]
    fn boolean_structure_nested_and_ids() {
        let s = json!({"should": []});
        assert!(m(&s, json!({})));
        let c = json!({
            "must_not": [{"key": "x", "match": {"value": "a"}}],
            "should": [{"has_id": [7]}, {"key": "y", "match": {"value": 1}}],
            "min_should": {"conditions": [{"key": "y", "range": {"gt": 0}}, {"key": "z", "match": {"value": true}}], "min_count": 1}
        });
        assert!(m(&c, json!({"y": 1})));
        assert!(!m(&c, json!({"x": "a", "y": 1})));
        assert!(!f(c.clone()).matches(&ExternalId::Num(8), &json!({"z": true})));
        let nested = json!({"must": [{"nested": {"key": "items[]", "filter": {"must": [
            {"key": "k", "match": {"value": "a"}}, {"key": "v", "range": {"gt": 1}}]}}}]});
        assert!(m(&nested, json!({"items": [{"k": "a", "v": 2}]})));
        // Both conditions must hold for the same element.
        assert!(!m(&nested, json!({"items": [{"k": "a", "v": 0}, {"k": "b", "v": 2}]})));
    }

    #[test]
    fn unsupported_and_bad_conditions_are_named() {
        for (v, want) in [
            (json!({"must": [{"key": "a", "geo_radius": {}}]}), "filter.must[0].geo_radius"),
            (json!({"must": [{"key": "a", "match": {"text": "x"}}]}), "filter.must[0].match.text"),
            (json!({"must": [{"has_vector": "v"}]}), "has_vector"),
            (
                json!({"must": [{"key": "a", "match": {"value": 1.5}}]}),
                "filter.must[0].match.value",
            ),
            (
                json!({"must": [{"key": "a", "range": {"gt": 1, "lt": "2024-01-01"}}]}),
                "filter.must[0].range",
            ),
            (json!({"mus": []}), "filter.mus"),
            (json!({"must": [{"key": "a"}]}), "filter.must[0]"),
        ] {
            let e = Filter::parse(&v, "filter").unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
        let mut deep = json!({"must": [{"key": "a", "match": {"value": 1}}]});
        for _ in 0..20 {
            deep = json!({"must": [deep]});
        }
        assert!(Filter::parse(&deep, "filter").unwrap_err().contains("FILTER_DEPTH_MAX"));
    }
}

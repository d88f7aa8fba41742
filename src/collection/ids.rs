//! External ids: what users call their points. Unsigned 64-bit integers, or
//! strings: a UUID in any spelling the `uuid` crate accepts (hyphenated,
//! simple 32 hex digits, braced, `urn:uuid:`, any case) is normalised to the
//! hyphenated lower-case form, so one point has one id; any other string is
//! kept as given. Strings are 1 to [`STRING_ID_BYTES_MAX`] bytes of UTF-8
//! without control characters.
//!
//! Encoding (in WAL records and the id map): tag u8 (1: u64 LE follows;
//! 2: u16 LE length, then the UTF-8 bytes).

use std::fmt;

/// Longest string id, in bytes.
pub const STRING_ID_BYTES_MAX: usize = 256;

/// A point's id as users see it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExternalId {
    Num(u64),
    Str(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("string id of {0} bytes exceeds STRING_ID_BYTES_MAX ({STRING_ID_BYTES_MAX})")]
    TooLong(usize),
    #[error("string id contains a control character at byte {0}")]
    Control(usize),
    #[error("encoded id is malformed: {0}")]
    Malformed(&'static str),
}

impl ExternalId {
    /// A string id: a UUID normalised, anything else checked and kept.
    pub fn from_string(s: &str) -> Result<ExternalId, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if let Ok(u) = uuid::Uuid::try_parse(s) {
            return Ok(ExternalId::Str(u.hyphenated().to_string()));
        }
        if s.len() > STRING_ID_BYTES_MAX {
            return Err(IdError::TooLong(s.len()));
        }
        if let Some((i, _)) = s.char_indices().find(|(_, c)| c.is_control()) {
            return Err(IdError::Control(i));
        }
        Ok(ExternalId::Str(s.to_string()))
    }

    /// An id typed on a command line: digits that fit u64 are a number,
    /// anything else a string id.
    pub fn parse_cli(s: &str) -> Result<ExternalId, IdError> {
        if !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = s.parse::<u64>()
        {
            return Ok(ExternalId::Num(n));
        }
        ExternalId::from_string(s)
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ExternalId::Num(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_le_bytes());
            }
            ExternalId::Str(s) => {
                debug_assert!(s.len() <= STRING_ID_BYTES_MAX);
                out.push(2);
                out.extend_from_slice(&(s.len() as u16).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// Decodes an id at the start of `b`; returns it and the bytes used.
    /// Every rule of [`Self::from_string`] is checked again.
    pub fn decode(b: &[u8]) -> Result<(ExternalId, usize), IdError> {
        match b.first() {
            Some(1) => {
                let n = b.get(1..9).ok_or(IdError::Malformed("u64 id cut short"))?;
                Ok((ExternalId::Num(u64::from_le_bytes(n.try_into().expect("8 bytes"))), 9))
            }
            Some(2) => {
                let l = b.get(1..3).ok_or(IdError::Malformed("string length cut short"))?;
                let len = u16::from_le_bytes([l[0], l[1]]) as usize;
                if len > STRING_ID_BYTES_MAX {
                    return Err(IdError::TooLong(len));
                }
                let s = b.get(3..3 + len).ok_or(IdError::Malformed("string id cut short"))?;
                let s = std::str::from_utf8(s).map_err(|_| IdError::Malformed("not UTF-8"))?;
                let id = ExternalId::from_string(s)?;
                if id != ExternalId::Str(s.to_string()) {
                    return Err(IdError::Malformed("UUID not in its normal form"));
                }
                Ok((id, 3 + len))
            }
            Some(_) => Err(IdError::Malformed("unknown id tag")),
            None => Err(IdError::Malformed("no id")),
        }
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExternalId::Num(n) => write!(f, "{n}"),
            ExternalId::Str(s) => write!(f, "{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Every spelling of one UUID is one id, in hyphenated lower case.
    #[test]
    fn uuids_are_normalised() {
        let want = ExternalId::Str("936da01f-9abd-4d9d-80c7-02af85c822a8".into());
        for s in [
            "936da01f-9abd-4d9d-80c7-02af85c822a8",
            "936DA01F-9ABD-4D9D-80C7-02AF85C822A8",
            "936da01f9abd4d9d80c702af85c822a8",
            "{936da01f-9abd-4d9d-80c7-02af85c822a8}",
            "urn:uuid:936da01f-9abd-4d9d-80c7-02af85c822a8",
        ] {
            assert_eq!(ExternalId::from_string(s).unwrap(), want, "{s}");
        }
        assert_eq!(ExternalId::parse_cli("42").unwrap(), ExternalId::Num(42));
        assert_eq!(
            ExternalId::parse_cli("18446744073709551616").unwrap(),
            ExternalId::Str("18446744073709551616".into()),
            "past u64: a string"
        );
        assert_eq!(ExternalId::parse_cli("doc-7").unwrap(), ExternalId::Str("doc-7".into()));
    }

    // Empty, too long and control characters are named errors.
    #[test]
    fn bad_string_ids_are_errors() {
        assert_eq!(ExternalId::from_string(""), Err(IdError::Empty));
        assert_eq!(ExternalId::from_string(&"x".repeat(257)), Err(IdError::TooLong(257)));
        assert!(ExternalId::from_string(&"x".repeat(256)).is_ok());
        assert_eq!(ExternalId::from_string("a\nb"), Err(IdError::Control(1)));
    }

    proptest! {
        /// Valid ids round-trip through their encoding; arbitrary bytes decode
        /// to an error or to an id that re-encodes to the same bytes.
        #[test]
        fn encoding_round_trips(n in any::<u64>(), s in "[a-zA-Z0-9 _./-]{1,40}",
                                junk in proptest::collection::vec(any::<u8>(), 0..40)) {
            for id in [ExternalId::Num(n), ExternalId::from_string(&s).unwrap()] {
                let mut b = Vec::new();
                id.encode(&mut b);
                b.extend_from_slice(&junk);
                let (back, used) = ExternalId::decode(&b).unwrap();
                prop_assert_eq!(&back, &id);
                let mut again = Vec::new();
                back.encode(&mut again);
                prop_assert_eq!(&b[..used], &again[..]);
            }
            if let Ok((id, used)) = ExternalId::decode(&junk) {
                let mut again = Vec::new();
                id.encode(&mut again);
                prop_assert_eq!(&junk[..used], &again[..]);
            }
        }
    }
}

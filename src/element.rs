//! Element types: the scalar a vector is made of (f32, u8 or i8).
//!
//! Every vector file, index and kernel is generic over [`Element`]; the on-disk
//! tag of each type is [`ElementType`]. Values are stored little-endian, so a
//! slice of elements is also its own byte encoding on the little-endian machines
//! basalt targets (checked at compile time below).

use std::fmt;
use std::str::FromStr;

// The zero-copy views of vector files and node records rely on native layout
// being little-endian.
const _: () = assert!(cfg!(target_endian = "little"), "basalt needs a little-endian CPU");

/// The element type of a vector, as stored in files and index headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    F32,
    U8,
    I8,
}

impl ElementType {
    /// Size of one element in bytes.
    pub const fn size_bytes(self) -> usize {
        match self {
            ElementType::F32 => 4,
            ElementType::U8 | ElementType::I8 => 1,
        }
    }

    /// The tag stored in on-disk headers. Never renumber: it is part of the format.
    pub const fn tag(self) -> u8 {
        match self {
            ElementType::F32 => 1,
            ElementType::U8 => 2,
            ElementType::I8 => 3,
        }
    }

    pub const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(ElementType::F32),
            2 => Some(ElementType::U8),
            3 => Some(ElementType::I8),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            ElementType::F32 => "f32",
            ElementType::U8 => "u8",
            ElementType::I8 => "i8",
        }
    }

    /// Checks that an f32 value is exactly a value of this type (finite for
    /// f32; an integer within range for u8 and i8), so that no query is
    /// silently rounded or clamped. The error says what the type takes.
    pub fn check_f32(self, v: f32) -> Result<(), &'static str> {
        let ok = match self {
            ElementType::F32 => v.is_finite(),
            ElementType::U8 => v.fract() == 0.0 && (0.0..=255.0).contains(&v),
            ElementType::I8 => v.fract() == 0.0 && (-128.0..=127.0).contains(&v),
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            ElementType::F32 => "values must be finite",
            ElementType::U8 => "a u8 index takes integers 0..=255",
            ElementType::I8 => "an i8 index takes integers -128..=127",
        })
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ElementType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "float" | "float32" => Ok(ElementType::F32),
            "u8" | "uint8" => Ok(ElementType::U8),
            "i8" | "int8" => Ok(ElementType::I8),
            other => Err(format!("unknown element type {other:?} (expected f32, u8 or i8)")),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
}

/// A scalar type vectors are made of. Sealed: the kernels and file formats
/// exist for exactly these three.
pub trait Element:
    sealed::Sealed + Copy + Send + Sync + Default + PartialEq + fmt::Debug + 'static
{
    const TYPE: ElementType;
    fn to_f32(self) -> f32;
    /// Rounds and saturates into the type's range (the identity for f32).
    fn from_f32(v: f32) -> Self;
    /// Whether the value may be indexed (finite for f32; always true for integers).
    fn is_valid(self) -> bool;
    /// Reinterprets a slice of elements as its little-endian bytes.
    fn as_bytes(slice: &[Self]) -> &[u8];
    /// Copies little-endian bytes into elements; `bytes.len()` must be `out.len() * size`.
    fn copy_from_bytes(bytes: &[u8], out: &mut [Self]);
}

impl Element for f32 {
    const TYPE: ElementType = ElementType::F32;
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline]
    fn is_valid(self) -> bool {
        self.is_finite()
    }
    fn as_bytes(slice: &[Self]) -> &[u8] {
        bytemuck_cast(slice)
    }
    fn copy_from_bytes(bytes: &[u8], out: &mut [Self]) {
        assert_eq!(bytes.len(), out.len() * 4, "byte length must match element count");
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
}

impl Element for u8 {
    const TYPE: ElementType = ElementType::U8;
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        v.round().clamp(0.0, 255.0) as u8
    }
    #[inline]
    fn is_valid(self) -> bool {
        true
    }
    fn as_bytes(slice: &[Self]) -> &[u8] {
        slice
    }
    fn copy_from_bytes(bytes: &[u8], out: &mut [Self]) {
        out.copy_from_slice(bytes);
    }
}

impl Element for i8 {
    const TYPE: ElementType = ElementType::I8;
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        v.round().clamp(-128.0, 127.0) as i8
    }
    #[inline]
    fn is_valid(self) -> bool {
        true
    }
    fn as_bytes(slice: &[Self]) -> &[u8] {
        bytemuck_cast(slice)
    }
    fn copy_from_bytes(bytes: &[u8], out: &mut [Self]) {
        assert_eq!(bytes.len(), out.len(), "byte length must match element count");
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = *b as i8;
        }
    }
}

/// Views a slice of plain-old-data scalars as bytes.
#[allow(unsafe_code, reason = "a byte view of plain scalars")]
fn bytemuck_cast<T: Element>(slice: &[T]) -> &[u8] {
    // SAFETY: T is one of f32/u8/i8 (the trait is sealed): no padding, every
    // byte initialised, and u8 has alignment 1, so the view is valid for the
    // same lifetime and covers exactly size_of_val(slice) bytes.
    unsafe { std::slice::from_raw_parts(slice.as_ptr().cast::<u8>(), std::mem::size_of_val(slice)) }
}

/// Dispatches a generic function on a runtime [`ElementType`].
#[macro_export]
macro_rules! with_element {
    ($ty:expr, $T:ident => $body:expr) => {
        match $ty {
            $crate::element::ElementType::F32 => {
                type $T = f32;
                $body
            }
            $crate::element::ElementType::U8 => {
                type $T = u8;
                $body
            }
            $crate::element::ElementType::I8 => {
                type $T = i8;
                $body
            }
        }
    };
}

//! Heap buffers aligned to the sector size, for O_DIRECT and io_uring reads.
//!
//! O_DIRECT needs the memory address, the file offset and the length of every
//! transfer aligned to the device's logical block size; aligning buffers to a
//! whole [`SECTOR_BYTES`] sector satisfies any device whose logical block is at
//! most 4 KiB. The readers in this module own one [`AlignedBuf`] each and hand
//! sub-ranges of it to the kernel.
//!
//! Invariants: the pointer is aligned to [`SECTOR_BYTES`], the length is a
//! multiple of [`SECTOR_BYTES`], and the bytes are zeroed at allocation, so
//! they are always initialised. A zero-length buffer allocates nothing.
//! Allocation failure is an error, not an abort.

use std::alloc::{self, Layout};
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use super::IoError;
use crate::format::SECTOR_BYTES;

/// A zeroed heap buffer aligned to [`SECTOR_BYTES`], whose length is a
/// multiple of [`SECTOR_BYTES`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `AlignedBuf` owns its allocation exclusively (like a `Box<[u8]>`),
// so moving it to another thread moves the only handle to the bytes.
#[allow(unsafe_code, reason = "AlignedBuf owns its allocation like a Box<[u8]>")]
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`; there is no interior mutability.
#[allow(unsafe_code, reason = "shared access only hands out &[u8]")]
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes aligned to [`SECTOR_BYTES`].
    ///
    /// Panics if `len` is not a multiple of [`SECTOR_BYTES`]: callers size
    /// buffers in whole sectors, so anything else is a bug.
    #[allow(unsafe_code, reason = "aligned allocation through std::alloc")]
    pub fn zeroed(len: usize) -> Result<AlignedBuf, IoError> {
        assert!(
            len.is_multiple_of(SECTOR_BYTES),
            "aligned buffer length {len} is not a multiple of {SECTOR_BYTES}"
        );
        if len == 0 {
            return Ok(AlignedBuf::empty());
        }
        let layout = Self::layout(len)?;
        // SAFETY: `layout` has a non-zero size (len > 0 was checked above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| IoError::Setup {
            what: "allocate an aligned read buffer",
            source: io::Error::from(io::ErrorKind::OutOfMemory),
        })?;
        Ok(AlignedBuf { ptr, len })
    }

    /// A buffer of length zero that owns no memory.
    pub fn empty() -> AlignedBuf {
        // A dangling pointer with sector alignment is a valid base for an
        // empty slice and is never passed to `dealloc` (see `Drop`).
        let ptr = NonNull::new(std::ptr::without_provenance_mut::<u8>(SECTOR_BYTES))
            .expect("SECTOR_BYTES is non-zero");
        AlignedBuf { ptr, len: 0 }
    }

    fn layout(len: usize) -> Result<Layout, IoError> {
        Layout::from_size_align(len, SECTOR_BYTES).map_err(|_| IoError::Setup {
            what: "lay out an aligned read buffer (length too large)",
            source: io::Error::from(io::ErrorKind::OutOfMemory),
        })
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The base address, for handing ranges of the buffer to the kernel.
    ///
    /// It is taken from the owned pointer, not through a `&mut [u8]`, so
    /// pointers derived from it stay valid while other ranges are borrowed.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes `start..start + len`, viewed without a reference to the rest of
    /// the buffer: the pipelined readers hand out a completed slot while the
    /// kernel may still be writing other slots. Panics if out of bounds.
    #[allow(unsafe_code, reason = "a slice view of part of the owned allocation")]
    pub fn range(&self, start: usize, len: usize) -> &[u8] {
        assert!(start.checked_add(len).is_some_and(|end| end <= self.len), "range out of bounds");
        // SAFETY: in bounds (checked above) of the live allocation this
        // buffer owns; the caller guarantees nothing writes this range (the
        // slot's read has completed and it is not resubmitted while the
        // borrow of `self` lasts).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) }
    }
}

#[allow(unsafe_code, reason = "a slice view of the owned allocation")]
impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for reads of `len` initialised (zeroed at
        // allocation) bytes for as long as `self` lives, or dangling and
        // aligned when `len == 0`, which is valid for an empty slice.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

#[allow(unsafe_code, reason = "a slice view of the owned allocation")]
impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[allow(unsafe_code, reason = "frees the allocation made in zeroed")]
impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        let layout = Layout::from_size_align(self.len, SECTOR_BYTES)
            .expect("the layout was valid when the buffer was allocated");
        // SAFETY: `ptr` came from `alloc_zeroed` with this same layout and is
        // freed exactly once, here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.len).finish()
    }
}

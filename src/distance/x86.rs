//! AVX2+FMA and AVX-512 kernels for x86_64.
//!
//! Each kernel is a safe `#[target_feature]` function: it checks its slice
//! lengths itself, so its only precondition is the CPU feature, which the
//! compiler enforces (calling it from code without the feature needs
//! `unsafe`). The helpers (steps, widening, horizontal sums) are safe
//! `#[target_feature]` functions too, called only from kernels with the same
//! features, so those calls need no `unsafe`. The one `unsafe` left per
//! kernel is the raw-pointer loads. The safe entry points at the bottom are
//! only reachable through `DistanceElement::kernels_at`, which never hands out
//! a level above the one detected on this CPU: that is the precondition their
//! `SAFETY` comments rely on.
//!
//! f32 kernels keep four independent accumulators so the FMA latency is
//! hidden; AVX-512 tails use masked loads, AVX2 tails fall back to scalar.
//! Integer kernels widen to i16 and use `madd_epi16` into i32 lanes, exact
//! for dimensions up to `DIM_MAX`.

use std::arch::x86_64::*;

use super::scalar;
use super::{Kernels, SimdLevel};

// ---------------------------------------------------------------- f32, AVX-512

macro_rules! f32_avx512_kernel {
    ($name:ident, $step:expr) => {
        #[target_feature(enable = "avx512f")]
        #[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
        fn $name(a: &[f32], b: &[f32]) -> f32 {
            assert_eq!(a.len(), b.len(), "distance between vectors of different dimension");
            let n = a.len();
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut i = 0;
            // SAFETY: every unmasked load reads 16 floats at offsets < n of
            // slices of length n (checked by the caller); the masked load
            // touches only the n - i < 16 remaining lanes.
            unsafe {
                while i + 64 <= n {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let va = _mm512_loadu_ps(pa.add(i + 16 * j));
                        let vb = _mm512_loadu_ps(pb.add(i + 16 * j));
                        *acc = $step(va, vb, *acc);
                    }
                    i += 64;
                }
                while i + 16 <= n {
                    let va = _mm512_loadu_ps(pa.add(i));
                    let vb = _mm512_loadu_ps(pb.add(i));
                    acc[0] = $step(va, vb, acc[0]);
                    i += 16;
                }
                if i < n {
                    let mask: __mmask16 = ((1u32 << (n - i)) - 1) as u16;
                    let va = _mm512_maskz_loadu_ps(mask, pa.add(i));
                    let vb = _mm512_maskz_loadu_ps(mask, pb.add(i));
                    acc[1] = $step(va, vb, acc[1]);
                }
            }
            let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            _mm512_reduce_add_ps(s)
        }
    };
}

#[target_feature(enable = "avx512f")]
#[inline]
fn l2_step_512(a: __m512, b: __m512, acc: __m512) -> __m512 {
    let d = _mm512_sub_ps(a, b);
    _mm512_fmadd_ps(d, d, acc)
}

#[target_feature(enable = "avx512f")]
#[inline]
fn ip_step_512(a: __m512, b: __m512, acc: __m512) -> __m512 {
    _mm512_fmadd_ps(a, b, acc)
}

f32_avx512_kernel!(l2_f32_avx512_impl, l2_step_512);
f32_avx512_kernel!(ip_f32_avx512_impl, ip_step_512);

#[target_feature(enable = "avx512f")]
#[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
fn cos_f32_avx512_impl(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "distance between vectors of different dimension");
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut dot, mut na, mut nb) = (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    // SAFETY: as in the kernels above: full loads stay below n, the tail is masked.
    unsafe {
        while i + 16 <= n {
            let va = _mm512_loadu_ps(pa.add(i));
            let vb = _mm512_loadu_ps(pb.add(i));
            dot = _mm512_fmadd_ps(va, vb, dot);
            na = _mm512_fmadd_ps(va, va, na);
            nb = _mm512_fmadd_ps(vb, vb, nb);
            i += 16;
        }
        if i < n {
            let mask: __mmask16 = ((1u32 << (n - i)) - 1) as u16;
            let va = _mm512_maskz_loadu_ps(mask, pa.add(i));
            let vb = _mm512_maskz_loadu_ps(mask, pb.add(i));
            dot = _mm512_fmadd_ps(va, vb, dot);
            na = _mm512_fmadd_ps(va, va, na);
            nb = _mm512_fmadd_ps(vb, vb, nb);
        }
    }
    scalar::cosine_from_parts(
        _mm512_reduce_add_ps(dot),
        _mm512_reduce_add_ps(na),
        _mm512_reduce_add_ps(nb),
    )
}

// ------------------------------------------------------------------ f32, AVX2

#[target_feature(enable = "avx2")]
#[inline]
fn hsum_256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

macro_rules! f32_avx2_kernel {
    ($name:ident, $step:ident, $tail:expr) => {
        #[target_feature(enable = "avx2,fma")]
        #[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
        fn $name(a: &[f32], b: &[f32]) -> f32 {
            assert_eq!(a.len(), b.len(), "distance between vectors of different dimension");
            let n = a.len();
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            // SAFETY: every load reads 8 floats at offsets < n of slices of length n.
            unsafe {
                while i + 32 <= n {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let va = _mm256_loadu_ps(pa.add(i + 8 * j));
                        let vb = _mm256_loadu_ps(pb.add(i + 8 * j));
                        *acc = $step(va, vb, *acc);
                    }
                    i += 32;
                }
                while i + 8 <= n {
                    let va = _mm256_loadu_ps(pa.add(i));
                    let vb = _mm256_loadu_ps(pb.add(i));
                    acc[0] = $step(va, vb, acc[0]);
                    i += 8;
                }
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            hsum_256(s) + $tail(&a[i..], &b[i..])
        }
    };
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn l2_step_256(a: __m256, b: __m256, acc: __m256) -> __m256 {
    let d = _mm256_sub_ps(a, b);
    _mm256_fmadd_ps(d, d, acc)
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn ip_step_256(a: __m256, b: __m256, acc: __m256) -> __m256 {
    _mm256_fmadd_ps(a, b, acc)
}

f32_avx2_kernel!(l2_f32_avx2_impl, l2_step_256, scalar::l2_squared_f32);
f32_avx2_kernel!(ip_f32_avx2_impl, ip_step_256, scalar::inner_product_f32);

#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
fn cos_f32_avx2_impl(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "distance between vectors of different dimension");
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut dot, mut na, mut nb) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    // SAFETY: every load reads 8 floats at offsets < n.
    unsafe {
        while i + 8 <= n {
            let va = _mm256_loadu_ps(pa.add(i));
            let vb = _mm256_loadu_ps(pb.add(i));
            dot = _mm256_fmadd_ps(va, vb, dot);
            na = _mm256_fmadd_ps(va, va, na);
            nb = _mm256_fmadd_ps(vb, vb, nb);
            i += 8;
        }
    }
    let (mut d, mut x, mut y) = (hsum_256(dot), hsum_256(na), hsum_256(nb));
    for (p, q) in a[i..].iter().zip(&b[i..]) {
        d += p * q;
        x += p * p;
        y += q * q;
    }
    scalar::cosine_from_parts(d, x, y)
}

// ------------------------------------------------------- u8 / i8, AVX-512 (BW)

macro_rules! int_avx512_kernels {
    ($t:ty, $widen:ident, $l2:ident, $ip:ident, $cos:ident) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        #[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
        fn $l2(a: &[$t], b: &[$t]) -> f32 {
            assert_eq!(a.len(), b.len(), "distance between vectors of different dimension");
            let n = a.len();
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let (mut acc0, mut acc1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            let mut i = 0;
            // SAFETY: full loads read 32 bytes below n; the tail load is masked to n - i < 32 bytes.
            unsafe {
                while i + 64 <= n {
                    let a0 = $widen(_mm256_loadu_si256(pa.add(i).cast()));
                    let b0 = $widen(_mm256_loadu_si256(pb.add(i).cast()));
                    let a1 = $widen(_mm256_loadu_si256(pa.add(i + 32).cast()));
                    let b1 = $widen(_mm256_loadu_si256(pb.add(i + 32).cast()));
                    let d0 = _mm512_sub_epi16(a0, b0);
                    let d1 = _mm512_sub_epi16(a1, b1);
                    acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(d0, d0));
                    acc1 = _mm512_add_epi32(acc1, _mm512_madd_epi16(d1, d1));
                    i += 64;
                }
                while i < n {
                    let m: __mmask32 =
                        if n - i >= 32 { u32::MAX } else { ((1u64 << (n - i)) - 1) as u32 };
                    let a0 = $widen(_mm256_maskz_loadu_epi8(m, pa.add(i).cast()));
                    let b0 = $widen(_mm256_maskz_loadu_epi8(m, pb.add(i).cast()));
                    let d0 = _mm512_sub_epi16(a0, b0);
                    acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(d0, d0));
                    i += 32;
                }
            }
            _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1)) as f32
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        #[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
        fn $ip(a: &[$t], b: &[$t]) -> f32 {
            assert_eq!(a.len(), b.len(), "distance between vectors of different dimension");
            let n = a.len();
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let (mut acc0, mut acc1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            let mut i = 0;
            // SAFETY: as in the l2 kernel above.
            unsafe {
                while i + 64 <= n {
                    let a0 = $widen(_mm256_loadu_si256(pa.add(i).cast()));
                    let b0 = $widen(_mm256_loadu_si256(pb.add(i).cast()));
                    let a1 = $widen(_mm256_loadu_si256(pa.add(i + 32).cast()));
                    let b1 = $widen(_mm256_loadu_si256(pb.add(i + 32).cast()));
                    acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(a0, b0));
                    acc1 = _mm512_add_epi32(acc1, _mm512_madd_epi16(a1, b1));
                    i += 64;
                }
                while i < n {
                    let m: __mmask32 =
                        if n - i >= 32 { u32::MAX } else { ((1u64 << (n - i)) - 1) as u32 };
                    let a0 = $widen(_mm256_maskz_loadu_epi8(m, pa.add(i).cast()));
                    let b0 = $widen(_mm256_maskz_loadu_epi8(m, pb.add(i).cast()));
                    acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(a0, b0));
                    i += 32;
                }
            }
            _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1)) as f32
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        #[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
        fn $cos(a: &[$t], b: &[$t]) -> f32 {
            assert_eq!(a.len(), b.len(), "distance between vectors of different dimension");
            let n = a.len();
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let (mut dot, mut na, mut nb) =
                (_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512());
            let mut i = 0;
            // SAFETY: as in the l2 kernel above.
            unsafe {
                while i < n {
                    let m: __mmask32 =
                        if n - i >= 32 { u32::MAX } else { ((1u64 << (n - i)) - 1) as u32 };
                    let a0 = $widen(_mm256_maskz_loadu_epi8(m, pa.add(i).cast()));
                    let b0 = $widen(_mm256_maskz_loadu_epi8(m, pb.add(i).cast()));
                    dot = _mm512_add_epi32(dot, _mm512_madd_epi16(a0, b0));
                    na = _mm512_add_epi32(na, _mm512_madd_epi16(a0, a0));
                    nb = _mm512_add_epi32(nb, _mm512_madd_epi16(b0, b0));
                    i += 32;
                }
            }
            scalar::cosine_from_parts(
                _mm512_reduce_add_epi32(dot) as f32,
                _mm512_reduce_add_epi32(na) as f32,
                _mm512_reduce_add_epi32(nb) as f32,
            )
        }
    };
}

#[target_feature(enable = "avx512bw")]
#[inline]
fn widen_u8_512(v: __m256i) -> __m512i {
    _mm512_cvtepu8_epi16(v)
}

#[target_feature(enable = "avx512bw")]
#[inline]
fn widen_i8_512(v: __m256i) -> __m512i {
    _mm512_cvtepi8_epi16(v)
}

int_avx512_kernels!(u8, widen_u8_512, l2_u8_avx512_impl, ip_u8_avx512_impl, cos_u8_avx512_impl);
int_avx512_kernels!(i8, widen_i8_512, l2_i8_avx512_impl, ip_i8_avx512_impl, cos_i8_avx512_impl);

// ------------------------------------------------------------ u8 / i8, AVX2

#[target_feature(enable = "avx2")]
#[inline]
fn hsum_epi32_256(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

macro_rules! int_avx2_kernels {
    ($t:ty, $widen:ident, $l2:ident, $ip:ident, $cos:ident, $sl2:path, $sip:path) => {
        #[target_feature(enable = "avx2")]
        #[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
        fn $l2(a: &[$t], b: &[$t]) -> f32 {
            assert_eq!(a.len(), b.len(), "distance between vectors of different dimension");
            let n = a.len();
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc = _mm256_setzero_si256();
            let mut i = 0;
            // SAFETY: each load reads 16 bytes at offsets < n.
            unsafe {
                while i + 16 <= n {
                    let va = $widen(_mm_loadu_si128(pa.add(i).cast()));
                    let vb = $widen(_mm_loadu_si128(pb.add(i).cast()));
                    let d = _mm256_sub_epi16(va, vb);
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(d, d));
                    i += 16;
                }
            }
            hsum_epi32_256(acc) as f32 + $sl2(&a[i..], &b[i..])
        }

        #[target_feature(enable = "avx2")]
        #[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
        fn $ip(a: &[$t], b: &[$t]) -> f32 {
            assert_eq!(a.len(), b.len(), "distance between vectors of different dimension");
            let n = a.len();
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc = _mm256_setzero_si256();
            let mut i = 0;
            // SAFETY: each load reads 16 bytes at offsets < n.
            unsafe {
                while i + 16 <= n {
                    let va = $widen(_mm_loadu_si128(pa.add(i).cast()));
                    let vb = $widen(_mm_loadu_si128(pb.add(i).cast()));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(va, vb));
                    i += 16;
                }
            }
            hsum_epi32_256(acc) as f32 + $sip(&a[i..], &b[i..])
        }

        #[target_feature(enable = "avx2")]
        #[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
        fn $cos(a: &[$t], b: &[$t]) -> f32 {
            assert_eq!(a.len(), b.len(), "distance between vectors of different dimension");
            let n = a.len();
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let (mut dot, mut na, mut nb) =
                (_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256());
            let mut i = 0;
            // SAFETY: each load reads 16 bytes at offsets < n.
            unsafe {
                while i + 16 <= n {
                    let va = $widen(_mm_loadu_si128(pa.add(i).cast()));
                    let vb = $widen(_mm_loadu_si128(pb.add(i).cast()));
                    dot = _mm256_add_epi32(dot, _mm256_madd_epi16(va, vb));
                    na = _mm256_add_epi32(na, _mm256_madd_epi16(va, va));
                    nb = _mm256_add_epi32(nb, _mm256_madd_epi16(vb, vb));
                    i += 16;
                }
            }
            let (mut d, mut x, mut y) = (hsum_epi32_256(dot), hsum_epi32_256(na), hsum_epi32_256(nb));
            for (p, q) in a[i..].iter().zip(&b[i..]) {
                let (p, q) = (*p as i32, *q as i32);
                d += p * q;
                x += p * p;
                y += q * q;
            }
            scalar::cosine_from_parts(d as f32, x as f32, y as f32)
        }
    };
}

#[target_feature(enable = "avx2")]
#[inline]
fn widen_u8_256(v: __m128i) -> __m256i {
    _mm256_cvtepu8_epi16(v)
}

#[target_feature(enable = "avx2")]
#[inline]
fn widen_i8_256(v: __m128i) -> __m256i {
    _mm256_cvtepi8_epi16(v)
}

int_avx2_kernels!(
    u8,
    widen_u8_256,
    l2_u8_avx2_impl,
    ip_u8_avx2_impl,
    cos_u8_avx2_impl,
    scalar::l2_squared_u8,
    scalar::inner_product_u8
);
int_avx2_kernels!(
    i8,
    widen_i8_256,
    l2_i8_avx2_impl,
    ip_i8_avx2_impl,
    cos_i8_avx2_impl,
    scalar::l2_squared_i8,
    scalar::inner_product_i8
);

// ------------------------------------------------------ f32 x u8 (mixed) dot

#[target_feature(enable = "avx512f")]
#[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
fn dot_f32_u8_avx512_impl(w: &[f32], c: &[u8]) -> f32 {
    assert_eq!(w.len(), c.len(), "weights and codes of different dimension");
    let n = w.len();
    let (pw, pc) = (w.as_ptr(), c.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: each step reads 16 floats and 16 bytes at offsets below n of
    // slices of length n; the tail (< 16) is summed in scalar code.
    unsafe {
        while i + 64 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let codes = _mm512_cvtepu8_epi32(_mm_loadu_si128(pc.add(i + 16 * j).cast()));
                let weights = _mm512_loadu_ps(pw.add(i + 16 * j));
                *acc = _mm512_fmadd_ps(weights, _mm512_cvtepi32_ps(codes), *acc);
            }
            i += 64;
        }
        while i + 16 <= n {
            let codes = _mm512_cvtepu8_epi32(_mm_loadu_si128(pc.add(i).cast()));
            let weights = _mm512_loadu_ps(pw.add(i));
            acc[0] = _mm512_fmadd_ps(weights, _mm512_cvtepi32_ps(codes), acc[0]);
            i += 16;
        }
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s) + scalar::dot_f32_u8(&w[i..], &c[i..])
}

#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code, reason = "SIMD loads through raw pointers")]
fn dot_f32_u8_avx2_impl(w: &[f32], c: &[u8]) -> f32 {
    assert_eq!(w.len(), c.len(), "weights and codes of different dimension");
    let n = w.len();
    let (pw, pc) = (w.as_ptr(), c.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    // SAFETY: each step reads 8 floats and 8 bytes at offsets below n of
    // slices of length n; the tail (< 16) is summed in scalar code.
    unsafe {
        while i + 16 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let codes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(pc.add(i + 8 * j).cast()));
                let weights = _mm256_loadu_ps(pw.add(i + 8 * j));
                *acc = _mm256_fmadd_ps(weights, _mm256_cvtepi32_ps(codes), *acc);
            }
            i += 16;
        }
    }
    hsum_256(_mm256_add_ps(acc[0], acc[1])) + scalar::dot_f32_u8(&w[i..], &c[i..])
}

#[allow(unsafe_code, reason = "calls a #[target_feature] kernel")]
fn dot_f32_u8_avx512(w: &[f32], c: &[u8]) -> f32 {
    // SAFETY: reachable only through `dot_f32_u8_at`, which never hands out
    // a level above the detected one; the kernel checks the lengths.
    unsafe { dot_f32_u8_avx512_impl(w, c) }
}

#[allow(unsafe_code, reason = "calls a #[target_feature] kernel")]
fn dot_f32_u8_avx2(w: &[f32], c: &[u8]) -> f32 {
    // SAFETY: as for `dot_f32_u8_avx512`.
    unsafe { dot_f32_u8_avx2_impl(w, c) }
}

pub static DOT_F32_U8_AVX512: super::MixedKernel = dot_f32_u8_avx512;
pub static DOT_F32_U8_AVX2: super::MixedKernel = dot_f32_u8_avx2;

// ---------------------------------------------------------------- safe entries

macro_rules! safe_entry {
    ($entry:ident, $impl:ident, $t:ty) => {
        #[allow(unsafe_code, reason = "calls a #[target_feature] kernel")]
        fn $entry(a: &[$t], b: &[$t]) -> f32 {
            // SAFETY: this entry is only reachable through a kernel table that
            // `kernels_at` hands out when the CPU has the required features
            // (see the module comment); the kernel checks the lengths.
            unsafe { $impl(a, b) }
        }
    };
}

safe_entry!(l2_f32_avx512, l2_f32_avx512_impl, f32);
safe_entry!(ip_f32_avx512, ip_f32_avx512_impl, f32);
safe_entry!(cos_f32_avx512, cos_f32_avx512_impl, f32);
safe_entry!(l2_f32_avx2, l2_f32_avx2_impl, f32);
safe_entry!(ip_f32_avx2, ip_f32_avx2_impl, f32);
safe_entry!(cos_f32_avx2, cos_f32_avx2_impl, f32);
safe_entry!(l2_u8_avx512, l2_u8_avx512_impl, u8);
safe_entry!(ip_u8_avx512, ip_u8_avx512_impl, u8);
safe_entry!(cos_u8_avx512, cos_u8_avx512_impl, u8);
safe_entry!(l2_i8_avx512, l2_i8_avx512_impl, i8);
safe_entry!(ip_i8_avx512, ip_i8_avx512_impl, i8);
safe_entry!(cos_i8_avx512, cos_i8_avx512_impl, i8);
safe_entry!(l2_u8_avx2, l2_u8_avx2_impl, u8);
safe_entry!(ip_u8_avx2, ip_u8_avx2_impl, u8);
safe_entry!(cos_u8_avx2, cos_u8_avx2_impl, u8);
safe_entry!(l2_i8_avx2, l2_i8_avx2_impl, i8);
safe_entry!(ip_i8_avx2, ip_i8_avx2_impl, i8);
safe_entry!(cos_i8_avx2, cos_i8_avx2_impl, i8);

pub static F32_AVX512: Kernels<f32> = Kernels {
    level: SimdLevel::Avx512,
    l2_squared: l2_f32_avx512,
    inner_product: ip_f32_avx512,
    cosine_distance: cos_f32_avx512,
};
pub static F32_AVX2: Kernels<f32> = Kernels {
    level: SimdLevel::Avx2,
    l2_squared: l2_f32_avx2,
    inner_product: ip_f32_avx2,
    cosine_distance: cos_f32_avx2,
};
pub static U8_AVX512: Kernels<u8> = Kernels {
    level: SimdLevel::Avx512,
    l2_squared: l2_u8_avx512,
    inner_product: ip_u8_avx512,
    cosine_distance: cos_u8_avx512,
};
pub static U8_AVX2: Kernels<u8> = Kernels {
    level: SimdLevel::Avx2,
    l2_squared: l2_u8_avx2,
    inner_product: ip_u8_avx2,
    cosine_distance: cos_u8_avx2,
};
pub static I8_AVX512: Kernels<i8> = Kernels {
    level: SimdLevel::Avx512,
    l2_squared: l2_i8_avx512,
    inner_product: ip_i8_avx512,
    cosine_distance: cos_i8_avx512,
};
pub static I8_AVX2: Kernels<i8> = Kernels {
    level: SimdLevel::Avx2,
    l2_squared: l2_i8_avx2,
    inner_product: ip_i8_avx2,
    cosine_distance: cos_i8_avx2,
};

/// Asks the CPU to bring the first `lines` cache lines of `v` into L1: a
/// hint, with no effect on any result.
#[allow(unsafe_code, reason = "the SSE prefetch intrinsic")]
pub(crate) fn prefetch<T>(v: &[T], lines: usize) {
    let p = v.as_ptr().cast::<i8>();
    let bytes = std::mem::size_of_val(v).min(lines * 64);
    for at in (0..bytes).step_by(64) {
        // SAFETY: SSE is in every x86_64 CPU (the target's baseline), and a
        // prefetch never faults whatever the address; this one is in `v`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at)) }
    }
}

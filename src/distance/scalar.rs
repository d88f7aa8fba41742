//! The scalar reference kernels: the oracle every SIMD kernel is tested
//! against, and the fallback on CPUs without AVX2. Written as plain loops in
//! the obvious order; integer kernels accumulate exactly in i32.

use super::{Kernels, SimdLevel};

pub fn l2_squared_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let d = x - y;
        s += d * d;
    }
    s
}

pub fn inner_product_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

pub fn cosine_distance_f32(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    cosine_from_parts(dot, na, nb)
}

/// `sum w[i] * c[i]`: f32 weights against u8 codes (the in-memory mode's
/// scalar-quantised steering, `search::memory`).
pub fn dot_f32_u8(w: &[f32], c: &[u8]) -> f32 {
    let mut s = 0.0f32;
    for (x, &y) in w.iter().zip(c) {
        s += x * f32::from(y);
    }
    s
}

/// `1 - dot / sqrt(na * nb)`, with a zero vector at cosine 0.
#[inline]
pub fn cosine_from_parts(dot: f32, na: f32, nb: f32) -> f32 {
    let denom = (na * nb).sqrt();
    if denom > 0.0 { 1.0 - dot / denom } else { 1.0 }
}

macro_rules! int_kernels {
    ($t:ty, $l2:ident, $ip:ident, $cos:ident) => {
        pub fn $l2(a: &[$t], b: &[$t]) -> f32 {
            let mut s = 0i32;
            for (x, y) in a.iter().zip(b) {
                let d = *x as i32 - *y as i32;
                s += d * d;
            }
            s as f32
        }

        pub fn $ip(a: &[$t], b: &[$t]) -> f32 {
            let mut s = 0i32;
            for (x, y) in a.iter().zip(b) {
                s += *x as i32 * *y as i32;
            }
            s as f32
        }

        pub fn $cos(a: &[$t], b: &[$t]) -> f32 {
            let (mut dot, mut na, mut nb) = (0i32, 0i32, 0i32);
            for (x, y) in a.iter().zip(b) {
                let (x, y) = (*x as i32, *y as i32);
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            cosine_from_parts(dot as f32, na as f32, nb as f32)
        }
    };
}

int_kernels!(u8, l2_squared_u8, inner_product_u8, cosine_distance_u8);
int_kernels!(i8, l2_squared_i8, inner_product_i8, cosine_distance_i8);

pub const F32: Kernels<f32> = Kernels {
    level: SimdLevel::Scalar,
    l2_squared: l2_squared_f32,
    inner_product: inner_product_f32,
    cosine_distance: cosine_distance_f32,
};
pub const U8: Kernels<u8> = Kernels {
    level: SimdLevel::Scalar,
    l2_squared: l2_squared_u8,
    inner_product: inner_product_u8,
    cosine_distance: cosine_distance_u8,
};
pub const I8: Kernels<i8> = Kernels {
    level: SimdLevel::Scalar,
    l2_squared: l2_squared_i8,
    inner_product: inner_product_i8,
    cosine_distance: cosine_distance_i8,
};

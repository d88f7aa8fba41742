//! Distances between vectors: the metric enum and the kernel dispatch.
//!
//! Convention: every distance is "smaller is nearer", so search code never
//! needs to know the metric:
//! - `L2`: squared Euclidean distance;
//! - `InnerProduct`: the negated inner product;
//! - `Cosine`: `1 - cos(a, b)`, with a zero vector at cosine 0 (distance 1).
//!
//! Kernels are picked once per process by CPU feature detection
//! ([`SimdLevel::detected`]) and reached through a table of function
//! pointers. [`scalar`] is the reference oracle the SIMD kernels are tested
//! against, and the fallback on other CPUs. Integer kernels accumulate in
//! 32-bit integers, exact for any dimension up to [`DIM_MAX`].

pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::element::Element;

/// Largest dimension basalt accepts anywhere. Bounded so that integer kernels
/// cannot overflow: 16384 * 2 * 255^2 < 2^31.
pub const DIM_MAX: usize = 16_384;
const _: () = assert!((DIM_MAX as u64) * 2 * 255 * 255 < i32::MAX as u64);

/// How distances are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    L2,
    #[serde(rename = "ip")]
    InnerProduct,
    Cosine,
}

impl Metric {
    /// The tag stored in on-disk headers. Never renumber.
    pub const fn tag(self) -> u8 {
        match self {
            Metric::L2 => 1,
            Metric::InnerProduct => 2,
            Metric::Cosine => 3,
        }
    }

    pub const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Metric::L2),
            2 => Some(Metric::InnerProduct),
            3 => Some(Metric::Cosine),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::InnerProduct => "ip",
            Metric::Cosine => "cosine",
        }
    }

    /// The score a user sees for a distance: squared L2 for `l2`, the inner
    /// product for `ip`, cosine similarity for `cosine`. This is also what
    /// ground-truth files store (as big-ann-benchmarks and the debian set do).
    pub fn score_from_distance(self, distance: f32) -> f32 {
        match self {
            Metric::L2 => distance,
            Metric::InnerProduct => -distance,
            Metric::Cosine => 1.0 - distance,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "l2" | "L2" | "euclidean" => Ok(Metric::L2),
            "ip" | "inner_product" | "mips" | "dot" => Ok(Metric::InnerProduct),
            "cosine" | "cos" => Ok(Metric::Cosine),
            other => Err(format!("unknown metric {other:?} (expected l2, ip or cosine)")),
        }
    }
}

/// The instruction-set level of a kernel table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Scalar,
    Avx2,
    Avx512,
}

impl SimdLevel {
    /// The best level this CPU supports, detected once.
    pub fn detected() -> SimdLevel {
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(detect)
    }

    /// Every level this CPU can run, lowest first (for tests and benches).
    pub fn available() -> Vec<SimdLevel> {
        let best = SimdLevel::detected();
        [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512]
            .into_iter()
            .filter(|l| *l <= best)
            .collect()
    }

    pub const fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }
}

fn detect() -> SimdLevel {
    if let Ok(forced) = std::env::var("BASALT_SIMD") {
        // An operator override, e.g. to rule out a kernel bug in production.
        let wanted = match forced.as_str() {
            "scalar" => SimdLevel::Scalar,
            "avx2" => SimdLevel::Avx2,
            _ => SimdLevel::Avx512,
        };
        return wanted.min(detect_cpu());
    }
    detect_cpu()
}

fn detect_cpu() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
        {
            return SimdLevel::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Scalar
}

/// A distance kernel over two equal-length slices.
pub type Kernel<T> = fn(&[T], &[T]) -> f32;

/// Hints the CPU to fetch the first `lines` cache lines of `v` (a vector
/// about to be scored) into its cache; nothing on other targets.
#[inline]
pub fn prefetch<T>(v: &[T], lines: usize) {
    #[cfg(target_arch = "x86_64")]
    x86::prefetch(v, lines);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, lines);
}

/// The kernels of one element type at one SIMD level.
#[derive(Clone, Copy)]
pub struct Kernels<T: 'static> {
    pub level: SimdLevel,
    /// Squared Euclidean distance.
    pub l2_squared: Kernel<T>,
    /// Inner product (not negated).
    pub inner_product: Kernel<T>,
    /// Cosine distance, `1 - cos`.
    pub cosine_distance: Kernel<T>,
}

impl<T: 'static> Kernels<T> {
    /// The kernel for a metric under the "smaller is nearer" convention.
    /// Inner product is negated by [`Distance`], not here.
    pub fn for_metric(&self, metric: Metric) -> Kernel<T> {
        match metric {
            Metric::L2 => self.l2_squared,
            Metric::InnerProduct => self.inner_product,
            Metric::Cosine => self.cosine_distance,
        }
    }
}

/// Element types that have distance kernels.
pub trait DistanceElement: Element {
    /// The kernel table for a given level; levels the CPU lacks fall back to
    /// the best one it has.
    fn kernels_at(level: SimdLevel) -> &'static Kernels<Self>;

    /// The kernel table for this CPU.
    fn kernels() -> &'static Kernels<Self> {
        Self::kernels_at(SimdLevel::detected())
    }
}

macro_rules! impl_distance_element {
    ($t:ty, $scalar:ident, $avx2:ident, $avx512:ident) => {
        impl DistanceElement for $t {
            fn kernels_at(level: SimdLevel) -> &'static Kernels<$t> {
                static SCALAR: Kernels<$t> = scalar::$scalar;
                let level = level.min(SimdLevel::detected());
                match level {
                    SimdLevel::Scalar => &SCALAR,
                    #[cfg(target_arch = "x86_64")]
                    SimdLevel::Avx2 => &x86::$avx2,
                    #[cfg(target_arch = "x86_64")]
                    SimdLevel::Avx512 => &x86::$avx512,
                    #[cfg(not(target_arch = "x86_64"))]
                    _ => &SCALAR,
                }
            }
        }
    };
}

impl_distance_element!(f32, F32, F32_AVX2, F32_AVX512);
impl_distance_element!(u8, U8, U8_AVX2, U8_AVX512);
impl_distance_element!(i8, I8, I8_AVX2, I8_AVX512);

/// A kernel of f32 weights against u8 codes.
pub type MixedKernel = fn(&[f32], &[u8]) -> f32;

/// `sum w[i] * c[i]` over f32 weights and u8 codes at `level` (at most
/// the detected one): the kernel of the in-memory mode's scalar-quantised
/// steering. Panics when the lengths differ.
pub fn dot_f32_u8_at(level: SimdLevel) -> MixedKernel {
    match level.min(SimdLevel::detected()) {
        SimdLevel::Scalar => scalar::dot_f32_u8,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => x86::DOT_F32_U8_AVX2,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => x86::DOT_F32_U8_AVX512,
        #[cfg(not(target_arch = "x86_64"))]
        _ => scalar::dot_f32_u8,
    }
}

/// A metric bound to its kernel: the object search and build code holds.
#[derive(Clone, Copy)]
pub struct Distance<T: 'static> {
    metric: Metric,
    kernel: Kernel<T>,
}

impl<T: DistanceElement> Distance<T> {
    pub fn new(metric: Metric) -> Self {
        Self::at_level(metric, SimdLevel::detected())
    }

    pub fn at_level(metric: Metric, level: SimdLevel) -> Self {
        Distance { metric, kernel: T::kernels_at(level).for_metric(metric) }
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The distance between `a` and `b`, smaller is nearer. Panics in debug
    /// builds when the lengths differ (a caller bug).
    #[inline]
    pub fn eval(&self, a: &[T], b: &[T]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "vectors of different dimension");
        let d = (self.kernel)(a, b);
        match self.metric {
            Metric::InnerProduct => -d,
            _ => d,
        }
    }
}

/// Squared L2 norm of an f32 vector.
pub fn norm_squared(v: &[f32]) -> f32 {
    (f32::kernels().inner_product)(v, v)
}

/// Scales `v` to unit length in place; a zero vector is left as it is.
pub fn normalize(v: &mut [f32]) {
    let n = norm_squared(v).sqrt();
    if n > 0.0 {
        let inv = 1.0 / n;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(test)]
mod tests;

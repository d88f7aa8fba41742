//! Every SIMD kernel against the scalar oracle, on random lengths (tails included).

use super::*;
use proptest::prelude::*;

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-4 * scale.max(1.0)
}

fn f32_pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (0usize..300).prop_flat_map(|n| {
        (proptest::collection::vec(-10.0f32..10.0, n), proptest::collection::vec(-10.0f32..10.0, n))
    })
}

fn bytes_pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (0usize..600).prop_flat_map(|n| {
        (proptest::collection::vec(any::<u8>(), n), proptest::collection::vec(any::<u8>(), n))
    })
}

fn f32_bytes_pair() -> impl Strategy<Value = (Vec<f32>, Vec<u8>)> {
    (0usize..300).prop_flat_map(|n| {
        (proptest::collection::vec(-10.0f32..10.0, n), proptest::collection::vec(any::<u8>(), n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// f32 kernels at every level agree with the scalar reference within float rounding.
    #[test]
    fn f32_kernels_match_reference((a, b) in f32_pair()) {
        let abs_scale: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).abs() * (x.abs() + y.abs()) + x * x + y * y).sum();
        for level in SimdLevel::available() {
            let k = f32::kernels_at(level);
            prop_assert!(close((k.l2_squared)(&a, &b), scalar::l2_squared_f32(&a, &b), abs_scale), "l2 {:?}", level);
            prop_assert!(close((k.inner_product)(&a, &b), scalar::inner_product_f32(&a, &b), abs_scale), "ip {:?}", level);
            let c = (k.cosine_distance)(&a, &b);
            prop_assert!((c - scalar::cosine_distance_f32(&a, &b)).abs() < 1e-3, "cos {:?}", level);
        }
    }

    /// The f32 x u8 dot of every level agrees with the scalar reference.
    #[test]
    fn mixed_dot_matches_reference((a, codes) in f32_bytes_pair()) {
        let scale: f32 = a.iter().map(|x| x.abs() * 255.0).sum();
        let want = scalar::dot_f32_u8(&a, &codes);
        for level in SimdLevel::available() {
            prop_assert!(close(dot_f32_u8_at(level)(&a, &codes), want, scale), "{:?}", level);
        }
    }

    /// u8 and i8 kernels are exact: they equal the reference bit for bit.
    #[test]
    fn int_kernels_match_reference_exactly((a, b) in bytes_pair()) {
        let ai: Vec<i8> = a.iter().map(|&x| x as i8).collect();
        let bi: Vec<i8> = b.iter().map(|&x| x as i8).collect();
        for level in SimdLevel::available() {
            let k = u8::kernels_at(level);
            prop_assert_eq!((k.l2_squared)(&a, &b), scalar::l2_squared_u8(&a, &b));
            prop_assert_eq!((k.inner_product)(&a, &b), scalar::inner_product_u8(&a, &b));
            prop_assert_eq!((k.cosine_distance)(&a, &b), scalar::cosine_distance_u8(&a, &b));
            let k = i8::kernels_at(level);
            prop_assert_eq!((k.l2_squared)(&ai, &bi), scalar::l2_squared_i8(&ai, &bi));
            prop_assert_eq!((k.inner_product)(&ai, &bi), scalar::inner_product_i8(&ai, &bi));
            prop_assert_eq!((k.cosine_distance)(&ai, &bi), scalar::cosine_distance_i8(&ai, &bi));
        }
    }
}

/// Integer kernels do not overflow at DIM_MAX with extreme values.
#[test]
fn int_kernels_exact_at_dim_max() {
    let a = vec![255u8; DIM_MAX];
    let b = vec![0u8; DIM_MAX];
    let ai = vec![-128i8; DIM_MAX];
    let bi = vec![127i8; DIM_MAX];
    for level in SimdLevel::available() {
        assert_eq!((u8::kernels_at(level).l2_squared)(&a, &b), (DIM_MAX as f32) * 65025.0);
        assert_eq!((i8::kernels_at(level).l2_squared)(&ai, &bi), (DIM_MAX as f32) * 65025.0);
        assert_eq!((i8::kernels_at(level).inner_product)(&ai, &ai), (DIM_MAX as f32) * 16384.0);
    }
}

/// The metric convention: smaller is nearer for all three metrics.
#[test]
fn distance_convention_smaller_is_nearer() {
    let q = [1.0f32, 0.0, 0.0];
    let near = [0.9f32, 0.1, 0.0];
    let far = [-1.0f32, 0.0, 0.0];
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        let d = Distance::<f32>::new(metric);
        assert!(d.eval(&q, &near) < d.eval(&q, &far), "{metric}");
    }
    let d = Distance::<f32>::new(Metric::Cosine);
    assert_eq!(d.eval(&q, &[0.0, 0.0, 0.0]), 1.0, "zero vector has cosine 0");
    assert!(d.eval(&q, &q).abs() < 1e-6);
}

/// Metric names parse back to the same metric and tags round-trip.
#[test]
fn metric_names_and_tags_round_trip() {
    for m in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        assert_eq!(m.name().parse::<Metric>().unwrap(), m);
        assert_eq!(Metric::from_tag(m.tag()), Some(m));
    }
    assert!("manhattan".parse::<Metric>().is_err());
    assert_eq!(Metric::from_tag(0), None);
}

//! The element types the kernels run in: `f32` on the hot path, `f64` for sharp checks.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Sub};

/// A float the engine can compute in.
pub trait Scalar:
    Copy
    + Default
    + Debug
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + AddAssign
{
    /// Conversion from f64.
    fn from_f64(v: f64) -> Self;
    /// Conversion to f64.
    fn to_f64(self) -> f64;
    /// 2ˣ
    fn exp2(self) -> Self;
    /// log₂ x
    fn log2(self) -> Self;
    /// sin x
    fn sin(self) -> Self;
    /// √x
    fn sqrt(self) -> Self;
    /// 1/x
    fn recip(self) -> Self;
    /// tanh x
    fn tanh(self) -> Self;
    /// 2ˣ with its multiply-adds fused (call only where the CPU has FMA).
    fn exp2_fused(self) -> Self;
    /// log₂ x with its multiply-adds fused (call only where the CPU has FMA).
    fn log2_fused(self) -> Self;
    /// tanh x with its multiply-adds fused (call only where the CPU has FMA: elsewhere
    /// `mul_add` is a library call).
    fn tanh_fused(self) -> Self;
    /// self · a + b, fused (one rounding; an FMA instruction where the CPU has one)
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// fmod
    fn rem(self, b: Self) -> Self;
    /// −∞
    fn neg_infinity() -> Self;
    /// Not a number?
    fn is_nan(self) -> bool;
}

macro_rules! impl_scalar {
    ($t:ty, [$exp2:expr, $log2:expr, $tanh:expr], [$exp2f:expr, $log2f:expr, $tanhf:expr]) => {
        impl Scalar for $t {
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp2(self) -> Self {
                $exp2(self)
            }
            #[inline(always)]
            fn log2(self) -> Self {
                $log2(self)
            }
            #[inline(always)]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn recip(self) -> Self {
                1.0 / self
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn exp2_fused(self) -> Self {
                $exp2f(self)
            }
            #[inline(always)]
            fn log2_fused(self) -> Self {
                $log2f(self)
            }
            #[inline(always)]
            fn tanh_fused(self) -> Self {
                $tanhf(self)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn rem(self, b: Self) -> Self {
                self % b
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn neg_infinity() -> Self {
                <$t>::NEG_INFINITY
            }
        }
    };
}

// f32: our vectorisable exp2/log2 (hot path); f64: the standard library (sharp checks).
impl_scalar!(
    f32,
    [
        super::fastmath::exp2,
        super::fastmath::log2,
        super::fastmath::tanh
    ],
    [
        super::fastmath::exp2_with::<true>,
        super::fastmath::log2_with::<true>,
        super::fastmath::tanh_with::<true>
    ]
);
impl_scalar!(
    f64,
    [f64::exp2, f64::log2, f64::tanh],
    [f64::exp2, f64::log2, f64::tanh]
);

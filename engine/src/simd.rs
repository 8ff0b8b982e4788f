//! The instruction set the fused kernels run with, chosen at run time from one binary.
//!
//! The executor's whole step ([`super::exec::exec`]) is compiled once per level, its kernels
//! inlined into a function with that level's target features, and each worker calls the
//! copy of its plan's level:
//!
//! * `avx512`: AVX-512 F/BW/DQ/VL with FMA (16 f32 lanes, 32 vector registers);
//! * `avx2`: AVX2 with FMA (8 lanes, 16 registers);
//! * `baseline`: what the build targets without extensions (SSE2 on x86-64, NEON on aarch64),
//!   and no fused multiply-add (a*b + c, since `mul_add` without FMA is a library call).
//!
//! The gemm microkernel's register block is the one part that differs between levels (MR rows
//! × NB columns of C in registers, chosen so the accumulators fit: 4 × 64 f32 in 16 of
//! AVX-512's 32 registers (6 × 32 in 12 where C has at most 32 columns), 6 × 16 in 12 of
//! AVX2's 16, 4 × 8 in 8 of SSE2's 16; on both AVX levels 12 × 4 and 12 × 8 where C has at
//! most 4 or 8 columns). Elementwise math fuses its multiply-adds where the
//! level has FMA ([`Isa::FMA`]).
//!
//! The default is the best level the CPU has; `THERMOFLOW_SIMD=baseline|avx2|avx512` lowers it
//! (`scalar` is taken for `baseline`), and [`super::program::Program::set_simd`] sets it per
//! program (tests run every kernel at every level the machine has).

use std::sync::OnceLock;

use serde::Serialize;

use super::gemm::{gemm_rows, gemm_stencil, Finish, Stencil, Strided};
use super::scalar::Scalar;
use crate::error::{Error, Result};

/// An instruction-set level of the fused kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The build's target without extensions, no FMA.
    Baseline,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 (F, BW, DQ, VL) and FMA.
    Avx512,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Level::Baseline, Level::Avx2, Level::Avx512];

    /// Its name (`THERMOFLOW_SIMD`'s spelling).
    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Parse a name (`scalar` is `baseline`).
    pub fn parse(s: &str) -> Result<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "baseline" | "scalar" => Ok(Level::Baseline),
            "avx2" => Ok(Level::Avx2),
            "avx512" => Ok(Level::Avx512),
            other => Err(Error::Input(format!(
                "unknown instruction-set level {other:?} (baseline, avx2 or avx512)"
            ))),
        }
    }

    /// Whether this CPU runs it.
    pub fn supported(self) -> bool {
        self <= detected()
    }
}

/// The best level this CPU runs.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// The level new plans get: [`detected`], or `THERMOFLOW_SIMD` where it names a level this CPU
/// runs (otherwise a warning on stderr, once, and the detected level).
pub fn default_level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = detected();
        match std::env::var("THERMOFLOW_SIMD") {
            Err(_) => best,
            Ok(v) => match Level::parse(&v) {
                Ok(l) if l.supported() => l,
                Ok(l) => {
                    eprintln!(
                        "[thermoflow] THERMOFLOW_SIMD={}: this CPU does not run it; using {}",
                        l.name(),
                        best.name()
                    );
                    best
                }
                Err(e) => {
                    eprintln!("[thermoflow] THERMOFLOW_SIMD: {e}; using {}", best.name());
                    best
                }
            },
        }
    })
}

/// `level` if this CPU runs it, an error otherwise.
pub fn check(level: Level) -> Result<Level> {
    if level.supported() {
        Ok(level)
    } else {
        Err(Error::Input(format!(
            "this CPU does not run the {} kernels (it has {})",
            level.name(),
            detected().name()
        )))
    }
}

/// What differs between the compiled copies of the executor: the gemm microkernel's register
/// block and whether it fuses multiply and add.
pub trait Isa {
    /// Whether the level has fused multiply-add (elementwise math may use `mul_add`).
    const FMA: bool;
    /// `C = A·B` rows with this level's block: [`gemm_rows`] for a strided A, [`gemm_stencil`]
    /// for one read through a stencil (k then comes from the stencil).
    #[allow(clippy::too_many_arguments)]
    fn gemm<T: Scalar>(
        m: usize,
        k: usize,
        n: usize,
        a: &(impl super::access::Read<T> + ?Sized),
        sa: ARead,
        b: &(impl super::access::Read<T> + ?Sized),
        b_offset: usize,
        rsb: usize,
        c: &mut [T],
        finish: &impl Finish<T>,
    );
}

/// How a gemm reads its operand A.
#[derive(Clone, Copy, Debug)]
pub enum ARead<'a> {
    /// Element (i, k) at `offset + i·rs + k·cs`.
    Strided(Strided),
    /// Runs of a stencil's source ([`super::stencil`]).
    Stencil(&'a Stencil<'a>),
}

/// An instruction-set copy: its FMA flag, its gemm block MR × NB, and narrower blocks for C of
/// few columns, `(at most n columns, MR, NB)` tried in order (a wide block computes columns
/// that are thrown away). On the AVX levels: 12 × 4 up to 4 columns (the φ⁴ flow's 2-channel
/// output convolution: it samples 13 % faster than with 6 × 32 on AVX-512, 4 % than with 6 × 16
/// on AVX2; the input gradients of a d = 2 coupling, whose training 12 × 8 had slowed by 17 %),
/// 12 × 8 up to 8 (the lattice and gauge flows' 8-channel convolutions: the gauge flow at L = 8
/// samples 16 % faster on AVX-512, 10 % on AVX2), and on AVX-512 6 × 32 up to 32 (the
/// conditioners' 23-column output layers).
/// Rows of a stencil gemm's block for the level's MR × NB: A's rows come through a pointer each,
/// held in general registers beside B's pointer and the counters, and more than 8 of them
/// spill (12 × 8 ran 6× slower than the gathered operand's 12 × 8, 8 × 8 as fast, on the gauge
/// flow's K = 54, n = 6); 12 × 4 keeps its 12 (as fast as the gathered operand).
const fn stencil_mr(mr: usize, nb: usize) -> usize {
    if nb > 4 && mr > 8 {
        8
    } else {
        mr
    }
}

macro_rules! isa {
    ($name:ident, $fma:expr, [$(($max_n:expr, $tmr:expr, $tnb:expr)),*], ($mr:expr, $nb:expr), $doc:expr) => {
        #[doc = $doc]
        pub struct $name;
        impl Isa for $name {
            const FMA: bool = $fma;
            #[inline(always)]
            fn gemm<T: Scalar>(
                m: usize,
                k: usize,
                n: usize,
                a: &(impl super::access::Read<T> + ?Sized),
                sa: ARead,
                b: &(impl super::access::Read<T> + ?Sized),
                b_offset: usize,
                rsb: usize,
                c: &mut [T],
                finish: &impl Finish<T>,
            ) {
                $(
                    if n <= $max_n {
                        return match sa {
                            ARead::Strided(sa) => gemm_rows::<T, $tmr, $tnb, $fma>(
                                m, k, n, a, sa, b, b_offset, rsb, c, finish,
                            ),
                            ARead::Stencil(st) => {
                                gemm_stencil::<T, { stencil_mr($tmr, $tnb) }, $tnb, $fma>(
                                    m, n, a, st, b, b_offset, rsb, c, finish,
                                )
                            }
                        };
                    }
                )*
                match sa {
                    ARead::Strided(sa) => gemm_rows::<T, $mr, $nb, $fma>(
                        m, k, n, a, sa, b, b_offset, rsb, c, finish,
                    ),
                    ARead::Stencil(st) => gemm_stencil::<T, { stencil_mr($mr, $nb) }, $nb, $fma>(
                        m, n, a, st, b, b_offset, rsb, c, finish,
                    ),
                }
            }
        }
    };
}

isa!(
    Baseline,
    false,
    [],
    (4, 8),
    "The baseline copy: 4 × 8 blocks, a·b + c."
);
isa!(
    Avx2,
    true,
    [(4, 12, 4), (8, 12, 8)],
    (6, 16),
    "The AVX2 copy: 6 × 16 blocks, FMA; 12 × 4 and 12 × 8 for C of at most 4 and 8 columns."
);
isa!(
    Avx512,
    true,
    [(4, 12, 4), (8, 12, 8), (32, 6, 32)],
    (4, 64),
    "The AVX-512 copy: 4 × 64 blocks, FMA; 12 × 4, 12 × 8 and 6 × 32 for C of at most 4, 8 \
     and 32 columns."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_order_and_refuse_what_the_cpu_lacks() {
        assert_eq!(Level::parse("AVX2").unwrap(), Level::Avx2);
        assert_eq!(Level::parse("scalar").unwrap(), Level::Baseline);
        assert!(Level::parse("sse9").is_err());
        assert!(Level::Baseline.supported());
        assert!(Level::Baseline < Level::Avx2 && Level::Avx2 < Level::Avx512);
        for l in Level::ALL {
            assert_eq!(check(l).is_ok(), l <= detected());
            assert_eq!(Level::parse(l.name()).unwrap(), l);
        }
    }
}

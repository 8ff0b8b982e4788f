//! A gemm microkernel for the shapes flows are made of: a tile of rows times a small weight
//! matrix (K, N of 2 to a few hundred), C = A·B with B's rows contiguous.
//!
//! ```text
//! C[i, j] = Σ_k A[i, k] B[k, j],   MR rows × NB columns of C held in registers,
//!           for each k: one row segment of B, broadcast A[i, k], MR·NB multiply-adds
//! ```
//!
//! No packing: B's rows are read in place (a narrow last block is zero-padded once per call) (a weight matrix of this size sits in L1/L2), A's
//! elements are broadcast one at a time, so a tile of a few hundred rows costs nothing to set
//! up. A general gemm (`matrixmultiply`) packs both operands on every call, which dominates
//! for these sizes. Shapes this kernel does not take (long K, B with strided rows) go there.

use super::access::Read;
use super::scalar::Scalar;

/// Longest K the kernel takes (beyond, cache blocking matters and `matrixmultiply` wins).
pub const MAX_K: usize = 256;

/// Operand A of `C = A·B`: element (i, k) at `offset + i·rs + k·cs`.
#[derive(Clone, Copy, Debug)]
pub struct Strided {
    /// Position of element (0, 0).
    pub offset: usize,
    /// Step between rows.
    pub rs: usize,
    /// Step between columns.
    pub cs: usize,
}

/// a·b + c, fused where the level has FMA (without it `mul_add` is a library call).
#[inline(always)]
fn madd<T: Scalar, const FMA: bool>(a: T, b: T, c: T) -> T {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// What runs on finished rows of C (the gemm's epilogue). A closure is one; the executor's
/// epilogue is a type of its own whose method is inlined into each instruction-set level's
/// copy of the executor (a closure's body is compiled once, at the baseline, where it is not
/// inlined).
pub trait Finish<T> {
    /// Finish `rows` (whole rows of C).
    fn rows(&self, rows: &mut [T]);
}

impl<T, F: Fn(&mut [T])> Finish<T> for F {
    #[inline(always)]
    fn rows(&self, rows: &mut [T]) {
        self(rows)
    }
}

/// Element (i, kk) of A.
#[inline(always)]
fn a_at<T: Scalar>(a: &(impl Read<T> + ?Sized), sa: Strided, i: usize, kk: usize) -> T {
    a.at(sa.offset + i * sa.rs + kk * sa.cs)
}

/// Row kk of B's column block `blk` (starting at `at` + the block's first column), in place
/// or zero-padded.
#[inline(always)]
fn b_row<'a, T: Scalar, const NB: usize>(
    b: &'a (impl Read<T> + ?Sized),
    at: usize,
    blocks: &[(usize, usize)],
    padded: &'a [Vec<[T; NB]>],
    blk: usize,
    kk: usize,
) -> &'a [T; NB] {
    let (j0, w) = blocks[blk];
    if w == NB {
        b.run(at + j0, at + j0 + NB).try_into().unwrap()
    } else {
        &padded[blk][kk]
    }
}

/// `c` (m × n, row-major, contiguous) = A (m × k) · B (k × n, row kk at
/// `b[b_offset + kk·rsb ..][..n]`), then `finish` on every group of finished rows (while they
/// are in L1: the gemm's epilogue), with MR × NB blocks of C in registers (the level's choice,
/// [`super::simd`]). Panics on an out-of-range operand (callers check bounds).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn gemm_rows<T: Scalar, const MR: usize, const NB: usize, const FMA: bool>(
    m: usize,
    k: usize,
    n: usize,
    a: &(impl Read<T> + ?Sized),
    sa: Strided,
    b: &(impl Read<T> + ?Sized),
    b_offset: usize,
    rsb: usize,
    c: &mut [T],
    finish: &impl Finish<T>,
) {
    // B's rows per column block, zero-padded to NB columns where the block is narrower.
    let blocks: Vec<(usize, usize)> = (0..n).step_by(NB).map(|j0| (j0, NB.min(n - j0))).collect();
    let padded: Vec<Vec<[T; NB]>> = blocks
        .iter()
        .map(|&(j0, w)| {
            if w == NB {
                return Vec::new();
            }
            (0..k)
                .map(|kk| {
                    let at = b_offset + kk * rsb + j0;
                    let mut r = [T::default(); NB];
                    r[..w].copy_from_slice(b.run(at, at + w));
                    r
                })
                .collect()
        })
        .collect();
    let mut i = 0;
    // MR rows × NB accumulators in registers, one multiply-add per element.
    while i + MR <= m {
        for (blk, &(j0, w)) in blocks.iter().enumerate() {
            let mut acc = [[T::default(); NB]; MR];
            for kk in 0..k {
                let r = b_row(b, b_offset + kk * rsb, &blocks, &padded, blk, kk);
                for (ii, acc) in acc.iter_mut().enumerate() {
                    let av = a_at(a, sa, i + ii, kk);
                    for j in 0..NB {
                        acc[j] = madd::<T, FMA>(av, r[j], acc[j]);
                    }
                }
            }
            for (ii, acc) in acc.iter().enumerate() {
                c[(i + ii) * n + j0..(i + ii) * n + j0 + w].copy_from_slice(&acc[..w]);
            }
        }
        finish.rows(&mut c[i * n..(i + MR) * n]);
        i += MR;
    }
    while i < m {
        for (blk, &(j0, w)) in blocks.iter().enumerate() {
            let mut acc = [T::default(); NB];
            for kk in 0..k {
                let av = a_at(a, sa, i, kk);
                let r = b_row(b, b_offset + kk * rsb, &blocks, &padded, blk, kk);
                for j in 0..NB {
                    acc[j] = madd::<T, FMA>(av, r[j], acc[j]);
                }
            }
            c[i * n + j0..i * n + j0 + w].copy_from_slice(&acc[..w]);
        }
        finish.rows(&mut c[i * n..(i + 1) * n]);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level's block shape (`super::super::simd`), on shapes that leave partial row and
    /// column blocks.
    #[test]
    fn matches_a_direct_product_on_odd_shapes_and_strides() {
        check::<4, 8, false>();
        check::<6, 16, true>();
        check::<4, 64, true>();
    }

    fn check<const MR: usize, const NB: usize, const FMA: bool>() {
        for (m, k, n) in [(1, 1, 1), (5, 3, 23), (9, 64, 64), (4, 2, 130), (7, 17, 64)] {
            let a: Vec<f64> = (0..m * k * 2).map(|v| (v as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..k * (n + 3) + 5)
                .map(|v| (v as f64 * 0.11).cos())
                .collect();
            // A transposed in memory (column-major, rows of 2k), B rows of n + 3 from offset 5.
            let sa = Strided {
                offset: 1,
                rs: 1,
                cs: m + 1,
            };
            let mut a_t = vec![0.0; 1 + (m + 1) * k + m];
            for i in 0..m {
                for kk in 0..k {
                    a_t[1 + i + kk * (m + 1)] = a[i * k + kk];
                }
            }
            let mut c = vec![0.0; m * n];
            gemm_rows::<f64, MR, NB, FMA>(
                m,
                k,
                n,
                a_t.as_slice(),
                sa,
                b.as_slice(),
                5,
                n + 3,
                &mut c,
                &|_: &mut [f64]| {},
            );
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|kk| a[i * k + kk] * b[5 + kk * (n + 3) + j])
                        .sum();
                    assert!(
                        (c[i * n + j] - want).abs() < 1e-12,
                        "{MR}x{NB}: {m}x{k}x{n} [{i},{j}]"
                    );
                }
            }
        }
    }
}

//! A gemm microkernel for the shapes flows are made of: a tile of rows times a small weight
//! matrix (K, N of 2 to a few hundred), C = A·B with B's rows contiguous.
//!
//! ```text
//! C[i, j] = Σ_k A[i, k] B[k, j],   4 rows × 64 columns of C held in registers,
//!           for each k: one row segment of B (4 vectors), broadcast A[i, k], 16 FMAs
//! ```
//!
//! No packing: B's rows are read in place (a narrow last block is zero-padded once per call) (a weight matrix of this size sits in L1/L2), A's
//! elements are broadcast one at a time, so a tile of a few hundred rows costs nothing to set
//! up. A general gemm (`matrixmultiply`) packs both operands on every call, which dominates
//! for these sizes. Shapes this kernel does not take (long K, B with strided rows) go there.

use super::access::Read;
use super::scalar::Scalar;

/// Columns per register block.
const NB: usize = 64;
/// Rows per register block.
const MR: usize = 4;
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

/// `c` (m × n, row-major, contiguous) = A (m × k) · B (k × n, row kk at
/// `b[b_offset + kk·rsb ..][..n]`), then `finish` on every group of finished rows (while they
/// are in L1: the gemm's epilogue). Panics on an out-of-range operand (callers check bounds).
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &(impl Read<T> + ?Sized),
    sa: Strided,
    b: &(impl Read<T> + ?Sized),
    b_offset: usize,
    rsb: usize,
    c: &mut [T],
    finish: &impl Fn(&mut [T]),
) {
    let a_at = |i: usize, kk: usize| a.at(sa.offset + i * sa.rs + kk * sa.cs);
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
    let row = |blk: usize, kk: usize| -> &[T; NB] {
        let (j0, w) = blocks[blk];
        if w == NB {
            let at = b_offset + kk * rsb + j0;
            b.run(at, at + NB).try_into().unwrap()
        } else {
            &padded[blk][kk]
        }
    };
    let mut i = 0;
    // 4 rows × NB accumulators in registers, one FMA per element.
    while i + MR <= m {
        for (blk, &(j0, w)) in blocks.iter().enumerate() {
            let (mut c0, mut c1, mut c2, mut c3) = (
                [T::default(); NB],
                [T::default(); NB],
                [T::default(); NB],
                [T::default(); NB],
            );
            for kk in 0..k {
                let r = row(blk, kk);
                let (a0, a1) = (a_at(i, kk), a_at(i + 1, kk));
                let (a2, a3) = (a_at(i + 2, kk), a_at(i + 3, kk));
                for j in 0..NB {
                    c0[j] = a0.mul_add(r[j], c0[j]);
                    c1[j] = a1.mul_add(r[j], c1[j]);
                    c2[j] = a2.mul_add(r[j], c2[j]);
                    c3[j] = a3.mul_add(r[j], c3[j]);
                }
            }
            let mut store = |r: usize, acc: &[T; NB]| {
                c[(i + r) * n + j0..(i + r) * n + j0 + w].copy_from_slice(&acc[..w]);
            };
            store(0, &c0);
            store(1, &c1);
            store(2, &c2);
            store(3, &c3);
        }
        finish(&mut c[i * n..(i + MR) * n]);
        i += MR;
    }
    while i < m {
        for (blk, &(j0, w)) in blocks.iter().enumerate() {
            let mut acc = [T::default(); NB];
            for kk in 0..k {
                let (av, r) = (a_at(i, kk), row(blk, kk));
                for j in 0..NB {
                    acc[j] = av.mul_add(r[j], acc[j]);
                }
            }
            c[i * n + j0..i * n + j0 + w].copy_from_slice(&acc[..w]);
        }
        finish(&mut c[i * n..(i + 1) * n]);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_product_on_odd_shapes_and_strides() {
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
            gemm_rows(
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
                    assert!((c[i * n + j] - want).abs() < 1e-12, "{m}x{k}x{n} [{i},{j}]");
                }
            }
        }
    }
}

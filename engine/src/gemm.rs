//! A gemm microkernel for the shapes flows are made of: a tile of rows times a small weight
//! matrix (K, N of 2 to a few hundred), C = A·B with B's rows contiguous.
//!
//! ```text
//! C[i, j] = Σ_k A[i, k] B[k, j],   MR rows × NB columns of C held in registers,
//!           for each k: one row segment of B, broadcast A[i, k], MR·NB multiply-adds
//! ```
//!
//! For K ≤ KC no packing: B's rows are read in place (a narrow last block is zero-padded once
//! per call; a weight matrix of this size sits in L1/L2), A's elements are broadcast one at a
//! time, so a tile of a few hundred rows costs nothing to set up (a general gemm packs both
//! operands on every call, which dominates for these sizes). Longer K (the weight gradients,
//! summed over a batch of 1024) runs in chunks of KC over packed panels (`packed`): every
//! gemm of a plan is this file's, in the instruction-set copy the executor runs
//! (`THERMOFLOW_SIMD` holds for all of them).

use super::access::Read;
use super::scalar::Scalar;

/// Longest K read in place; longer K runs in chunks of KC over packed panels. Unpacked over
/// k = 1024, the weight gradients of the d = 16 training step of `bench flows` ran at 75 GFLOP/s
/// (AVX2, one thread) against 86–91 packed.
pub const KC: usize = 256;

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

/// Operand A of `C = A·B` read through a stencil (an implicit im2col, the periodic
/// convolutions' input): row i is row `i / p` of the source (rows of `in_row`) at site
/// `i % p`, and its k = segments · s columns are `segments` runs of s consecutive source
/// elements, segment q of site j starting at `offsets[j · segments + q]` in the source row.
#[derive(Clone, Copy, Debug)]
pub struct Stencil<'a> {
    /// Sites per source row (A's rows per source row).
    pub p: usize,
    /// Source row length.
    pub in_row: usize,
    /// Run length s.
    pub s: usize,
    /// First source position of each (site, segment), site-major.
    pub offsets: &'a [u32],
    /// A's row 0 is A's row `row0` (the first of a range of rows).
    pub row0: usize,
}

impl Stencil<'_> {
    /// Segments per row.
    pub fn segments(&self) -> usize {
        self.offsets.len() / self.p.max(1)
    }
    /// Source position of row i's segment q.
    #[cfg(test)]
    fn at(&self, i: usize, q: usize) -> usize {
        let (r, j) = ((self.row0 + i) / self.p, (self.row0 + i) % self.p);
        r * self.in_row + self.offsets[j * self.segments() + q] as usize
    }
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

/// The MR × NB block of C at A's row pointer `a` (rows `rs` apart, columns `cs` apart) and
/// B's row pointer `b` (rows `rsb` apart, NB readable columns each), over `k` terms.
///
/// # Safety
/// Every element `a + ii·rs + kk·cs` (ii < MR, kk < k) and `b + kk·rsb + j` (j < NB) lies in
/// a live buffer that no other worker writes while this runs.
#[inline(always)]
unsafe fn block<T: Scalar, const MR: usize, const NB: usize, const FMA: bool>(
    k: usize,
    a: *const T,
    rs: usize,
    cs: usize,
    b: *const T,
    rsb: usize,
) -> [[T; NB]; MR] {
    let mut acc = [[T::default(); NB]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..k {
        // SAFETY: the caller's contract covers row kk of B and column kk of A's MR rows.
        let r: [T; NB] = unsafe { std::ptr::read_unaligned(b as *const [T; NB]) };
        for (ii, acc) in acc.iter_mut().enumerate() {
            let av = unsafe { a.add(ii * rs).read() };
            for j in 0..NB {
                acc[j] = madd::<T, FMA>(av, r[j], acc[j]);
            }
        }
        a = a.wrapping_add(cs);
        b = b.wrapping_add(rsb);
    }
    acc
}

/// [`block`] with A's MR rows at pointers of their own (k consecutive elements each), adding
/// to `acc`: one segment of a [`Stencil`] operand.
///
/// # Safety
/// As [`block`], for every `rows[ii] + kk`.
#[inline(always)]
unsafe fn block_from<T: Scalar, const MR: usize, const NB: usize, const FMA: bool>(
    k: usize,
    rows: [*const T; MR],
    b: *const T,
    rsb: usize,
    mut acc: [[T; NB]; MR],
) -> [[T; NB]; MR] {
    let mut b = b;
    for kk in 0..k {
        // SAFETY: the caller's contract covers row kk of B and element kk of each A row.
        let r: [T; NB] = unsafe { std::ptr::read_unaligned(b as *const [T; NB]) };
        for (ii, acc) in acc.iter_mut().enumerate() {
            let av = unsafe { rows[ii].wrapping_add(kk).read() };
            for j in 0..NB {
                acc[j] = madd::<T, FMA>(av, r[j], acc[j]);
            }
        }
        b = b.wrapping_add(rsb);
    }
    acc
}

/// B's column blocks of NB for a gemm whose K ≤ KC: full blocks read in place, a narrower last
/// block from a zero-padded copy of its rows (k × NB).
struct BBlocks<T> {
    base: *const T,
    rsb: usize,
    n: usize,
    tail: usize,
    padded: Vec<T>,
}

impl<T: Scalar> BBlocks<T> {
    fn new<const NB: usize>(
        k: usize,
        n: usize,
        b: &(impl Read<T> + ?Sized),
        b_offset: usize,
        rsb: usize,
    ) -> Self {
        let tail = n % NB;
        let padded = if tail == 0 {
            Vec::new()
        } else {
            let j0 = n - tail;
            let mut rows = vec![T::default(); k * NB];
            for (kk, r) in rows.chunks_exact_mut(NB).enumerate() {
                let at = b_offset + kk * rsb + j0;
                r[..tail].copy_from_slice(b.run(at, at + tail));
            }
            rows
        };
        BBlocks {
            base: b.base_ptr().wrapping_add(b_offset),
            rsb,
            n,
            tail,
            padded,
        }
    }
    /// Column block j0's rows: (pointer, row stride, width).
    #[inline(always)]
    fn at<const NB: usize>(&self, j0: usize) -> (*const T, usize, usize) {
        if j0 + NB <= self.n {
            (self.base.wrapping_add(j0), self.rsb, NB)
        } else {
            (self.padded.as_ptr(), NB, self.tail)
        }
    }
}

/// `c` (m × n) = A · B as [`gemm_rows`], A read through a [`Stencil`] (k = segments · s ≤ KC:
/// longer k takes the materialised operand). Each element of C sums its k terms in the same
/// order as [`gemm_rows`] would over the gathered A, so the results are the same bits.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn gemm_stencil<T: Scalar, const MR: usize, const NB: usize, const FMA: bool>(
    m: usize,
    n: usize,
    a: &(impl Read<T> + ?Sized),
    st: &Stencil,
    b: &(impl Read<T> + ?Sized),
    b_offset: usize,
    rsb: usize,
    c: &mut [T],
    finish: &impl Finish<T>,
) {
    let (segments, s) = (st.segments(), st.s);
    let k = segments * s;
    assert!(k <= KC, "gemm_stencil: k = {k} beyond {KC}");
    assert!(c.len() >= m * n, "gemm: C holds {} of {m} × {n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    // Every run inside its source row, and the last row's source row inside A's buffer, B's
    // rows inside its own: checked once.
    let run_end = st
        .offsets
        .iter()
        .map(|&o| o as usize + s)
        .max()
        .unwrap_or(0);
    let rows_end = (st.row0 + m).div_ceil(st.p) * st.in_row;
    assert!(
        k == 0 || (run_end <= st.in_row && rows_end <= a.len()),
        "gemm: A's runs end at {run_end} of rows of {}, its rows at {rows_end} of {}",
        st.in_row,
        a.len()
    );
    if k == 0 {
        c[..m * n].fill(T::default());
        finish.rows(&mut c[..m * n]);
        return;
    }
    let b_last = b_offset + (k - 1) * rsb + n - 1;
    assert!(b_last < b.len(), "gemm: B reads {b_last} of {}", b.len());
    let bb = BBlocks::<T>::new::<NB>(k, n, b, b_offset, rsb);
    let base = a.base_ptr();
    let mut i = 0;
    while i < m {
        let mr = MR.min(m - i);
        // Each row's source row and site, once per block (rows beyond m, in a partial last
        // block, repeat the last row: computed, not stored).
        let row = |ii: usize| st.row0 + i + ii.min(mr - 1);
        let starts: [usize; MR] = std::array::from_fn(|ii| row(ii) / st.p * st.in_row);
        let sites: [usize; MR] = std::array::from_fn(|ii| row(ii) % st.p * segments);
        for j0 in (0..n).step_by(NB) {
            let (bp, bs, w) = bb.at::<NB>(j0);
            let mut acc = [[T::default(); NB]; MR];
            for q in 0..segments {
                let rows: [*const T; MR] = std::array::from_fn(|ii| {
                    base.wrapping_add(starts[ii] + st.offsets[sites[ii] + q] as usize)
                });
                // SAFETY: every run lies within its source row, the rows within A (run_end,
                // rows_end), B's rows within b_last or the padded copy (k × NB), checked above.
                acc = unsafe {
                    block_from::<T, MR, NB, FMA>(s, rows, bp.wrapping_add(q * s * bs), bs, acc)
                };
            }
            store_block(&mut c[i * n..], n, j0, w, &acc[..mr]);
        }
        finish.rows(&mut c[i * n..(i + mr) * n]);
        i += mr;
    }
}

/// `c` (m × n, row-major, contiguous) = A (m × k) · B (k × n, row kk at
/// `b[b_offset + kk·rsb ..][..n]`), then `finish` on every group of finished rows (while they
/// are in L1: the gemm's epilogue), with MR × NB blocks of C in registers (the level's choice,
/// [`super::simd`]). The operands' extents are checked once, before any read; the loops then
/// read through pointers (checking every element inside them cost two thirds of the speed:
/// 36 against 115 GFLOP/s at 252 × 64 × 64 on AVX2). Panics on an out-of-range operand
/// (callers check bounds).
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
    assert!(c.len() >= m * n, "gemm: C holds {} of {m} × {n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(T::default());
        finish.rows(&mut c[..m * n]);
        return;
    }
    // The last element each operand's loops read (the largest index: strides are positive).
    let a_last = sa.offset + (m - 1) * sa.rs + (k - 1) * sa.cs;
    let b_last = b_offset + (k - 1) * rsb + n - 1;
    assert!(a_last < a.len(), "gemm: A reads {a_last} of {}", a.len());
    assert!(b_last < b.len(), "gemm: B reads {b_last} of {}", b.len());
    if k > KC {
        return packed::<T, MR, NB, FMA>(m, k, n, a, sa, b, b_offset, rsb, c, finish);
    }
    // B's column blocks of NB; only the last can be narrower, and it reads a zero-padded copy
    // of its rows (k × NB).
    let bb = BBlocks::<T>::new::<NB>(k, n, b, b_offset, rsb);
    let b_rows = |j0: usize| bb.at::<NB>(j0);
    let a_rows = |i: usize| a.base_ptr().wrapping_add(sa.offset + i * sa.rs);
    let mut i = 0;
    // MR rows × NB accumulators in registers, one multiply-add per element.
    while i + MR <= m {
        for j0 in (0..n).step_by(NB) {
            let (bp, bs, w) = b_rows(j0);
            // SAFETY: rows i..i + MR < m and k terms of A lie within a_last, checked above;
            // B's rows: full blocks within b_last, padded ones are k × NB.
            let acc = unsafe { block::<T, MR, NB, FMA>(k, a_rows(i), sa.rs, sa.cs, bp, bs) };
            store_block(&mut c[i * n..], n, j0, w, &acc);
        }
        finish.rows(&mut c[i * n..(i + MR) * n]);
        i += MR;
    }
    while i < m {
        for j0 in (0..n).step_by(NB) {
            let (bp, bs, w) = b_rows(j0);
            // SAFETY: as above, for the single row i < m.
            let acc = unsafe { block::<T, 1, NB, FMA>(k, a_rows(i), sa.rs, sa.cs, bp, bs) };
            c[i * n + j0..i * n + j0 + w].copy_from_slice(&acc[0][..w]);
        }
        finish.rows(&mut c[i * n..(i + 1) * n]);
        i += 1;
    }
}

/// Store a block's rows of accumulators into C's rows (`n` apart, from `c`) at columns
/// `j0 .. j0 + w`. A constant width keeps the accumulators in registers (copied out with the
/// runtime width, they spilled: 49 against 101 GFLOP/s).
#[inline(always)]
fn store_block<T: Scalar, const NB: usize>(
    c: &mut [T],
    n: usize,
    j0: usize,
    w: usize,
    acc: &[[T; NB]],
) {
    for (ii, acc) in acc.iter().enumerate() {
        let row = &mut c[ii * n + j0..];
        if w == NB {
            row[..NB].copy_from_slice(acc);
        } else {
            row[..w].copy_from_slice(&acc[..w]);
        }
    }
}

/// Long k (the weight gradients, summed over a batch): k in chunks of KC; each chunk of B
/// packed into NB-wide panels (KC × NB contiguous, zero beyond n), each MR-row block of A into
/// KC × MR (zero beyond m), so the block reads both sequentially; C stored from the first
/// chunk and added from the others, `finish` on all rows at the end.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn packed<T: Scalar, const MR: usize, const NB: usize, const FMA: bool>(
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
    let panels = n.div_ceil(NB);
    let blocks = m.div_ceil(MR);
    let mut bp = vec![T::default(); panels * KC * NB];
    let mut ap = vec![T::default(); blocks * KC * MR];
    for k0 in (0..k).step_by(KC) {
        let kn = KC.min(k - k0);
        for (p, panel) in bp.chunks_exact_mut(KC * NB).enumerate() {
            let (j0, w) = (p * NB, NB.min(n - p * NB));
            for (kk, row) in panel.chunks_exact_mut(NB).take(kn).enumerate() {
                let at = b_offset + (k0 + kk) * rsb + j0;
                copy::<T, NB>(&mut row[..w], b.run(at, at + w));
            }
        }
        for (ib, ablock) in ap.chunks_exact_mut(KC * MR).enumerate() {
            let (i, mr) = (ib * MR, MR.min(m - ib * MR));
            for (kk, col) in ablock.chunks_exact_mut(MR).take(kn).enumerate() {
                let at = sa.offset + i * sa.rs + (k0 + kk) * sa.cs;
                if sa.rs == 1 {
                    copy::<T, MR>(&mut col[..mr], a.run(at, at + mr));
                } else {
                    for (ii, v) in col[..mr].iter_mut().enumerate() {
                        *v = a.at(at + ii * sa.rs);
                    }
                }
            }
        }
        // Each B panel stays in L1 while every block of A passes it.
        for (p, panel) in bp.chunks_exact(KC * NB).enumerate() {
            let (j0, w) = (p * NB, NB.min(n - p * NB));
            for (ib, ablock) in ap.chunks_exact(KC * MR).enumerate() {
                let (i, mr) = (ib * MR, MR.min(m - ib * MR));
                // SAFETY: both packed panels hold kn ≤ KC rows of MR and NB elements.
                let acc = unsafe {
                    block::<T, MR, NB, FMA>(kn, ablock.as_ptr(), 1, MR, panel.as_ptr(), NB)
                };
                for (ii, acc) in acc.iter().take(mr).enumerate() {
                    let row = &mut c[(i + ii) * n + j0..];
                    if w == NB {
                        store::<T, NB>(&mut row[..NB], acc, k0 > 0);
                    } else {
                        store::<T, NB>(&mut row[..w], acc, k0 > 0);
                    }
                }
            }
        }
    }
    finish.rows(&mut c[..m * n]);
}

/// `dst.copy_from_slice(src)` for at most W elements, with the width a constant when it is W
/// (a copy of a runtime length is a library call, which for runs of 6 or 16 elements was a
/// fifth of the packed gemm's time).
#[inline(always)]
fn copy<T: Scalar, const W: usize>(dst: &mut [T], src: &[T]) {
    if dst.len() == W {
        dst[..W].copy_from_slice(&src[..W]);
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s;
        }
    }
}

/// `row = acc[..row.len()]`, or `row += acc[..]` for a later chunk of k.
#[inline(always)]
fn store<T: Scalar, const NB: usize>(row: &mut [T], acc: &[T; NB], add: bool) {
    let acc = &acc[..row.len()];
    if add {
        for (r, &a) in row.iter_mut().zip(acc) {
            *r += a;
        }
    } else {
        row.copy_from_slice(acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level's block shape (`super::super::simd`), on shapes that leave partial row and
    /// column blocks, in place and packed (K > KC, with a partial last chunk).
    #[test]
    fn matches_a_direct_product_on_odd_shapes_and_strides() {
        check::<4, 8, false>();
        check::<6, 16, true>();
        check::<4, 64, true>();
        check::<6, 32, true>();
        check::<12, 8, true>();
        check::<12, 4, true>();
    }

    /// Through a stencil, every level's block gives the same bits as over the gathered A (odd
    /// row counts, a narrow last column block, rows starting mid-source-row).
    #[test]
    fn a_stencil_operand_gives_the_gathered_operands_bits() {
        stencil::<4, 8, false>();
        stencil::<6, 16, true>();
        stencil::<4, 64, true>();
        stencil::<12, 8, true>();
        stencil::<12, 4, true>();
    }

    fn stencil<const MR: usize, const NB: usize, const FMA: bool>() {
        // 3 sites of a periodic ring of 3 with 2 channels; segments: left, self, right.
        let (p, ch, rows) = (3usize, 2usize, 5usize);
        let in_row = p * ch;
        let offsets: Vec<u32> = (0..p)
            .flat_map(|j| [(j + p - 1) % p, j, (j + 1) % p])
            .map(|site| (site * ch) as u32)
            .collect();
        let src: Vec<f64> = (0..rows * in_row)
            .map(|v| (v as f64 * 0.37).sin())
            .collect();
        for (n, row0, m) in [(5, 0, 15), (8, 1, 13), (3, 4, 7), (70, 2, 11)] {
            let st = Stencil {
                p,
                in_row,
                s: ch,
                offsets: &offsets,
                row0,
            };
            let k = st.segments() * ch;
            let b: Vec<f64> = (0..k * n + 3).map(|v| (v as f64 * 0.11).cos()).collect();
            let gathered: Vec<f64> = (0..m)
                .flat_map(|i| (0..st.segments()).map(move |q| (i, q)))
                .flat_map(|(i, q)| {
                    let at = st.at(i, q);
                    src[at..at + ch].to_vec()
                })
                .collect();
            let (mut want, mut got) = (vec![0.0; m * n], vec![0.0; m * n]);
            let sa = Strided {
                offset: 0,
                rs: k,
                cs: 1,
            };
            let id = |_: &mut [f64]| {};
            gemm_rows::<f64, MR, NB, FMA>(
                m,
                k,
                n,
                gathered.as_slice(),
                sa,
                b.as_slice(),
                3,
                n,
                &mut want,
                &id,
            );
            gemm_stencil::<f64, MR, NB, FMA>(
                m,
                n,
                src.as_slice(),
                &st,
                b.as_slice(),
                3,
                n,
                &mut got,
                &id,
            );
            assert_eq!(got, want, "{MR}x{NB}: n {n}, rows {row0}.., m {m}");
        }
    }

    fn check<const MR: usize, const NB: usize, const FMA: bool>() {
        for (m, k, n) in [
            (1, 1, 1),
            (5, 3, 23),
            (9, 64, 64),
            (4, 2, 130),
            (7, 17, 64),
            (3, 0, 5),
            (13, 600, 23),
            (7, 257, 64),
        ] {
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

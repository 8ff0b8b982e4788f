//! A plan's gemm step as one strided-batched BLAS call, where its operands' views allow it
//! (how the CUDA backend hands gemms to cuBLAS; the generated kernel stays for the others).
//!
//! The step computes, over the batch index p (the leading axes),
//!
//! ```text
//! C[p, m, n] = Σ_k A[p, m, k] · B[p, n, k]          C row-major [.., M, N]
//! ```
//!
//! BLAS is column-major: C row-major is Cᵀ column-major (N × M, ld = N), and Cᵀ = B · Aᵀ. So
//! BLAS's first operand is B (N × K) and its second Aᵀ (K × M):
//!
//! ```text
//! B[n, k] at n·s_n + k·s_k:  s_k = 1 → stored K × N, ld = s_n, op = T;  s_n = 1 → N × K, ld = s_k, op = N
//! Aᵀ[k, m] at m·s_m + k·s_k: s_k = 1 → stored K × M, ld = s_m, op = N;  s_m = 1 → M × K, ld = s_k, op = T
//! ```
//!
//! with a leading dimension at least the stored rows (BLAS's requirement; an axis of length 1
//! takes any stride). The leading axes must collapse to one batch axis of a single stride
//! (0: an operand shared by the whole batch). A padded view, a broadcast row or column, or
//! leading axes that do not collapse keep the generated kernel.

use super::view::View;

/// One operand of the call: where it starts, whether BLAS reads it transposed, its leading
/// dimension and its batch stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    /// First element in the node's buffer.
    pub offset: usize,
    /// BLAS's op is T (transposed).
    pub trans: bool,
    /// Leading dimension.
    pub ld: usize,
    /// Elements between consecutive batch entries (0: shared).
    pub stride: usize,
}

/// `C' = op(A') · op(B')` for every batch entry, column-major, C' of m × n with ld = m,
/// where BLAS's m, n, k are the step's N, M, K and A', B' the step's B and A.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Rows of C' (the step's N).
    pub m: usize,
    /// Columns of C' (the step's M).
    pub n: usize,
    /// Inner dimension (the step's K).
    pub k: usize,
    /// Batch entries.
    pub batch: usize,
    /// BLAS's first operand: the step's B.
    pub a: Operand,
    /// BLAS's second operand: the step's A.
    pub b: Operand,
}

impl Call {
    /// What the call computes, by BLAS's definition (column-major, op T reading the stored
    /// matrix transposed) on host buffers `a` and `b` (BLAS's operands: the step's B and A):
    /// the step's output, row-major. For tests against the CPU backend.
    pub fn reference(&self, a: &[f64], b: &[f64]) -> Vec<f64> {
        let at = |o: &Operand, buf: &[f64], p: usize, i: usize, j: usize| {
            let (r, s) = if o.trans { (j, i) } else { (i, j) };
            buf[o.offset + p * o.stride + r + s * o.ld]
        };
        let mut out = vec![0.0; self.batch * self.m * self.n];
        for p in 0..self.batch {
            for j in 0..self.n {
                for i in 0..self.m {
                    out[p * self.m * self.n + i + j * self.m] = (0..self.k)
                        .map(|l| at(&self.a, a, p, i, l) * at(&self.b, b, p, l, j))
                        .sum();
                }
            }
        }
        out
    }
}

/// The BLAS call computing a gemm step with operand views `a` (`[.., M, K]`) and `b`
/// (`[.., N, K]`), if their layout allows one.
pub fn call(a: &View, b: &View) -> Option<Call> {
    let r = a.axes.len();
    if r < 2 || b.axes.len() != r || a.is_masked() || b.is_masked() {
        return None;
    }
    let (m, k, n) = (a.axes[r - 2].len, a.axes[r - 1].len, b.axes[r - 2].len);
    if b.axes[r - 1].len != k || m * n * k == 0 {
        return None;
    }
    let (batch, stride_a) = collapse(&a.axes[..r - 2])?;
    let (batch_b, stride_b) = collapse(&b.axes[..r - 2])?;
    if batch != batch_b {
        return None;
    }
    // BLAS's first operand: B[n, k] (rows n of N, columns k of K).
    let bb = operand(b, (n, b.axes[r - 2].stride), (k, b.axes[r - 1].stride))?;
    // BLAS's second: Aᵀ[k, m].
    let aa = operand(a, (k, a.axes[r - 1].stride), (m, a.axes[r - 2].stride))?;
    Some(Call {
        m: n,
        n: m,
        k,
        batch,
        a: Operand {
            stride: stride_b,
            ..bb
        },
        b: Operand {
            stride: stride_a,
            ..aa
        },
    })
}

/// The operand whose element (i, j) (i < rows, j < cols) sits at `offset + i·si + j·sj`: stored
/// column-major rows × cols (op N) when si = 1, or cols × rows read transposed (op T) when
/// sj = 1 (both can fit where an axis has length 1: the first is taken).
fn operand(v: &View, (rows, si): (usize, usize), (cols, sj): (usize, usize)) -> Option<Operand> {
    let offset = usize::try_from(v.offset).ok()?;
    // An axis of length 1 is never stepped along: its stride may be anything.
    let si = if rows == 1 { 1 } else { si };
    let sj = if cols == 1 { 1 } else { sj };
    let plain = (si == 1).then_some(Operand {
        offset,
        trans: false,
        ld: if cols == 1 { rows } else { sj },
        stride: 0,
    });
    let transposed = (sj == 1).then_some(Operand {
        offset,
        trans: true,
        ld: if rows == 1 { cols } else { si },
        stride: 0,
    });
    // BLAS's leading dimension is at least the stored matrix's rows.
    let ok = |o: &Operand| {
        let stored_rows = if o.trans { cols } else { rows };
        o.ld >= stored_rows.max(1)
    };
    plain.filter(ok).or(transposed.filter(ok))
}

/// The leading axes as one batch axis: (entries, stride), or None where they do not collapse.
fn collapse(axes: &[super::view::Axis]) -> Option<(usize, usize)> {
    let batch: usize = axes.iter().map(|a| a.len).product();
    // From the innermost axis outwards, each axis of length > 1 must step by the stride of
    // the one inside it times that one's length (all 0 for an operand shared by the batch).
    let mut stride: Option<usize> = None;
    let mut expected = 0;
    for a in axes.iter().rev().filter(|a| a.len > 1) {
        if stride.is_some() && a.stride != expected {
            return None;
        }
        stride.get_or_insert(a.stride);
        expected = a.stride * a.len;
    }
    Some((batch, stride.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The step's definition through its views.
    fn run_step(av: &View, bv: &View, a: &[f64], b: &[f64]) -> Vec<f64> {
        let r = av.axes.len();
        let (m, k, n) = (av.axes[r - 2].len, av.axes[r - 1].len, bv.axes[r - 2].len);
        let lead: Vec<usize> = av.axes[..r - 2].iter().map(|x| x.len).collect();
        let batch: usize = lead.iter().product();
        let mut out = Vec::with_capacity(batch * m * n);
        for p in 0..batch {
            let mut idx = vec![0; r - 2];
            let mut q = p;
            for d in (0..r - 2).rev() {
                idx[d] = q % lead[d];
                q /= lead[d];
            }
            for mm in 0..m {
                for nn in 0..n {
                    let s: f64 = (0..k)
                        .map(|kk| {
                            let ja: Vec<usize> = idx.iter().copied().chain([mm, kk]).collect();
                            let jb: Vec<usize> = idx.iter().copied().chain([nn, kk]).collect();
                            a[av.position(&ja).unwrap()] * b[bv.position(&jb).unwrap()]
                        })
                        .sum();
                    out.push(s);
                }
            }
        }
        out
    }

    fn buffer(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|i| (((i + 3) * (seed + 7) * 2654435761usize) % 1000) as f64 / 500.0 - 1.0)
            .collect()
    }

    /// Every layout the plans produce (row-major, transposed, broadcast over the batch,
    /// offset, folded leading axes, length-1 axes) gives the step's product through BLAS's
    /// definition; layouts BLAS cannot take are refused.
    #[test]
    fn blas_calls_compute_the_gemm_step() {
        let (m, k, n) = (5, 4, 3);
        let mut cases: Vec<(&str, View, View)> = vec![
            (
                "row-major both",
                View::contiguous(&[m, k]),
                View::contiguous(&[n, k]),
            ),
            (
                "weights read transposed",
                View::contiguous(&[m, k]),
                View::contiguous(&[k, n]).permute(&[1, 0]),
            ),
            (
                "A transposed",
                View::contiguous(&[k, m]).permute(&[1, 0]),
                View::contiguous(&[n, k]),
            ),
            (
                "batched, B shared",
                View::contiguous(&[2, m, k]),
                View::contiguous(&[n, k]).expand(0, 2),
            ),
            (
                "two leading axes",
                View::contiguous(&[2, 3, m, k]),
                View::contiguous(&[2, 3, n, k]),
            ),
            (
                "one row",
                View::contiguous(&[1, k]),
                View::contiguous(&[n, k]),
            ),
            (
                "one column",
                View::contiguous(&[m, 1]),
                View::contiguous(&[n, 1]),
            ),
        ];
        let mut offset = View::contiguous(&[m, k]);
        offset.offset = 7;
        cases.push(("offset", offset, View::contiguous(&[n, k])));
        // Rows of A spaced wider than K (a slice of a wider matrix).
        let mut wide = View::contiguous(&[m, k + 2]);
        wide.axes[1].len = k;
        wide.axes[1].hi = k;
        cases.push(("strided rows", wide, View::contiguous(&[n, k])));
        for (what, av, bv) in cases {
            let c = call(&av, &bv).unwrap_or_else(|| panic!("{what}: refused"));
            let extent = |v: &View| v.extent().map(|(_, hi)| hi as usize + 1).unwrap();
            let (a, b) = (buffer(extent(&av), 1), buffer(extent(&bv), 2));
            let want = run_step(&av, &bv, &a, &b);
            let got = c.reference(&b, &a);
            assert_eq!(got.len(), want.len(), "{what}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "{what}: {g} against {w}");
            }
        }
        // Refused: a broadcast row (stride 0 along M), and padding.
        let rows = View::contiguous(&[k]).expand(0, m);
        assert!(call(&rows, &View::contiguous(&[n, k])).is_none());
        let mut padded = View::contiguous(&[m, k]);
        padded.axes[0].lo = 1;
        assert!(call(&padded, &View::contiguous(&[n, k])).is_none());
        // Leading axes that do not collapse into one stride.
        let mut torn = View::contiguous(&[2, 3, m, k]);
        torn.axes[0].stride += 1;
        assert!(call(&torn, &View::contiguous(&[2, 3, n, k])).is_none());
    }
}

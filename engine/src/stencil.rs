//! The im2col of a periodic convolution and its adjoint, kept out of memory on the CPU.
//!
//! **Read in place.** A gemm whose A is gathered by a `take` (row i of A = the stencil of site
//! i mod P of source row i / P) reads A through the take's source instead, and the CPU
//! executor skips the take, which copied every input value nine times (a quarter of the gauge
//! flow's sampling time).
//!
//! ```text
//! A[i, q·s + c] = src[(i / P) · in_row + offsets[(i mod P) · segments + q] + c],   c < s
//! ```
//!
//! The take's table, row by row of K = segments · s, must consist of runs of s ≥ 3 consecutive
//! source positions (a stencil point's channels); A must be the take's output read as is, and
//! the gemm its only reader. The gemm then sums each element's terms in the same order as over
//! the gathered A ([`super::gemm::gemm_stencil`]): the same bits.
//!
//! **Gathered where read.** Training reads the im2col a second time, as B of the weight
//! gradient's gemm per configuration (`W̄_b = ȳ_bᵀ · A_b`, summed over b afterwards): that gemm
//! gathers configuration b's take row into a worker's scratch (L1) just before computing entry
//! b, the take's own row copy. A take is skipped only where every reader reads it one of these
//! two ways.
//!
//! **Added up where computed.** The input gradient of the convolution is a gemm
//! Ḡ = ȳ · Wᵀ (9·C columns a site) followed by a `put` adding each site's columns onto its
//! neighbours (the im2col's adjoint):
//!
//! ```text
//! x̄[r, table[j]] = Σ_{i < q} Σ_{j ∈ row}  Ḡ[r·q + i, ·]   in the order (i, j),   q = |table| / N
//! ```
//!
//! Where the put is the gemm's only reader, the put computes Ḡ's q rows of each output row
//! itself, a few output rows at a time into a worker's scratch, and adds them up in the same
//! order: Ḡ (as large as the take's output) never goes to memory, the gemm is skipped, and the
//! bits are the same (each element of Ḡ is the same sum whichever rows a gemm call covers).
//!
//! The GPU generators ignore all three (they run every step); [`super::plan::Plan::fill_elided`]
//! runs the skipped steps where their outputs are wanted (the node-by-node comparisons).

use std::sync::Arc;

use super::ir::Ir;
use super::plan::Step;
use super::view::View;

/// Shortest run read in place: the gauge flow's 3-channel input convolutions (runs of 3) gain,
/// their takes costing more than the gemm loses reading short runs through row pointers;
/// shorter runs (the φ⁴ flow's 1-channel inputs) keep their takes, not measured.
const MIN_RUN: usize = 3;

/// How the CPU reads a gemm's A through an elided take's source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StencilA {
    /// The take's source node.
    pub src: usize,
    /// Source row length.
    pub in_row: usize,
    /// Sites (rows of A) per source row.
    pub p: usize,
    /// Run length.
    pub s: usize,
    /// First source position of each (site, segment), site-major.
    pub offsets: Arc<[u32]>,
}

/// How the CPU reads a gemm's B, `[batch, N, K]`, from an elided take's output: batch entry i
/// is within take row i, which the gemm gathers into a worker's scratch (the take's row copy,
/// into L1 instead of memory) before computing entry i.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakeRows {
    /// The take's source node.
    pub src: usize,
    /// Source row length.
    pub in_row: usize,
    /// The take's table as runs (first, length) of consecutive source positions.
    pub runs: Arc<[(u32, u32)]>,
    /// Take row length (the table's).
    pub row: usize,
}

/// The gemm whose output rows a put computes itself (the gemm skipped): C = A · Bᵀ through
/// the views of its [`Step::MatMul`], N columns.
#[derive(Clone, Debug)]
pub struct PutGemm {
    /// lhs node and view `[M, K]`.
    pub a: (usize, View),
    /// rhs node and view `[N, K]`.
    pub b: (usize, View),
    /// Columns of C.
    pub n: usize,
}

/// Elements of Ḡ a put computes per gemm call (64 KiB in f32: the rows stay in L2 until they
/// are added up); at least one output row's worth.
pub const PUT_CHUNK: usize = 16 * 1024;

/// Mark the gemms of `steps` that can read a take's output through its source (A through a
/// stencil, setting their `stencil`; B gathered a batch entry at a time, setting their
/// `gather`) and the puts that can compute their source's rows themselves (setting their
/// `gemm`), and return which steps (those takes and gemms) the CPU then skips. `required`
/// nodes (read back by the caller) are never skipped; neither is a step whose output is read
/// by anything else.
pub fn elide(ir: &Ir, steps: &mut [Step], required: &[usize], max_k: usize) -> Vec<bool> {
    let mut readers = vec![0usize; ir.nodes.len()];
    for s in steps.iter() {
        for n in super::tile::sources(s) {
            readers[n] += 1;
        }
    }
    let producer: Vec<Option<usize>> = {
        let mut p = vec![None; ir.nodes.len()];
        for (i, s) in steps.iter().enumerate() {
            p[s.out()] = Some(i);
        }
        p
    };
    let mut elided = vec![false; steps.len()];
    // A take is skipped where every reader is a gemm that can read it without it: as A through
    // a stencil, or as B gathering one take row per batch entry.
    for t in 0..steps.len() {
        let Step::Take {
            out,
            src,
            table,
            runs,
            in_row,
        } = &steps[t]
        else {
            continue;
        };
        let (x, t_len) = (*out, table.len());
        if required.contains(&x) || t_len == 0 {
            continue;
        }
        let mut reads: Vec<(usize, Read)> = Vec::new();
        for (j, step) in steps.iter().enumerate() {
            let Step::MatMul { a, b, epilogue, .. } = step else {
                continue;
            };
            let bias = epilogue.as_ref().and_then(|e| e.bias).map(|b| b.0);
            if (a.0 != x && b.0 != x) || (a.0 == x && b.0 == x) || bias == Some(x) {
                continue;
            }
            let read = if a.0 == x {
                stencil_a(ir, a, b, (*src, *in_row, table), max_k).map(Read::A)
            } else {
                gathers_b(&b.1, t_len, ir.nodes[x].len).then(|| {
                    Read::B(TakeRows {
                        src: *src,
                        in_row: *in_row,
                        runs: runs.clone(),
                        row: t_len,
                    })
                })
            };
            let Some(read) = read else { break };
            reads.push((j, read));
        }
        if reads.is_empty() || reads.len() != readers[x] {
            continue;
        }
        for (j, read) in reads {
            if let Step::MatMul {
                stencil, gather, ..
            } = &mut steps[j]
            {
                match read {
                    Read::A(st) => *stencil = Some(Arc::new(st)),
                    Read::B(g) => *gather = Some(Arc::new(g)),
                }
            }
        }
        elided[t] = true;
    }
    for j in 0..steps.len() {
        let Step::Put { src, table, .. } = &steps[j] else {
            continue;
        };
        let Some(g) = producer[*src] else { continue };
        let Step::MatMul {
            a,
            b,
            epilogue: None,
            stencil: None,
            gather: None,
            ..
        } = &steps[g]
        else {
            continue;
        };
        let r = b.1.axes.len();
        let n = b.1.axes[r - 2].len;
        if readers[*src] != 1
            || required.contains(src)
            || elided[g]
            || n == 0
            || table.is_empty()
            || !table.len().is_multiple_of(n)
        {
            continue;
        }
        let gemm = PutGemm {
            a: a.clone(),
            b: b.clone(),
            n,
        };
        if let Step::Put { gemm: gm, .. } = &mut steps[j] {
            *gm = Some(Arc::new(gemm));
            elided[g] = true;
        }
    }
    elided
}

/// How a gemm reads a skipped take's output.
enum Read {
    A(StencilA),
    B(TakeRows),
}

/// A (`a`) read through a stencil of the take `(src, in_row, table)`: A the take's output
/// read as is, B shared by every batch entry, K ≤ `max_k` in runs of at least [`MIN_RUN`].
fn stencil_a(
    ir: &Ir,
    a: &(usize, View),
    b: &(usize, View),
    (src, in_row, table): (usize, usize, &[u32]),
    max_k: usize,
) -> Option<StencilA> {
    let r = a.1.axes.len();
    let k = a.1.axes[r - 1].len;
    let shared_b = b.1.axes[..r - 2].iter().all(|x| x.stride == 0);
    if !a.1.is_identity(ir.nodes[a.0].len)
        || !shared_b
        || k == 0
        || k > max_k
        || !table.len().is_multiple_of(k)
    {
        return None;
    }
    let s = run_length(table, k)?;
    Some(StencilA {
        src,
        in_row,
        p: table.len() / k,
        s,
        offsets: table.iter().step_by(s).copied().collect(),
    })
}

/// Whether a gemm's B view `[batch, N, K]` of a take's output (`len` elements, rows of
/// `t_len`) reads batch entry i within take row i, N's elements adjacent (B's rows read in
/// place, as the weight gradients' im2col is).
fn gathers_b(b: &View, t_len: usize, len: usize) -> bool {
    let [batch, n, k] = b.axes[..] else {
        return false;
    };
    let inner_end = (n.len.max(1) - 1) * n.stride + (k.len.max(1) - 1) * k.stride + 1;
    b.offset == 0
        && batch.stride == t_len
        && batch.len * t_len == len
        && n.stride == 1
        && inner_end <= t_len
        && !b.is_masked()
}

/// The longest s ≥ [`MIN_RUN`] dividing `k` such that every aligned chunk of s in `table` is a
/// run of consecutive positions.
fn run_length(table: &[u32], k: usize) -> Option<usize> {
    (MIN_RUN..=k)
        .rev()
        .filter(|&s| k.is_multiple_of(s))
        .find(|&s| {
            table
                .chunks_exact(s)
                .all(|c| c.iter().enumerate().all(|(i, &v)| v == c[0] + i as u32))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_the_longest_aligned_consecutive_chunks() {
        // Two sites, 2 segments of 4: runs of 4 (8 would cross a segment that jumps).
        let table: Vec<u32> = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3].to_vec();
        assert_eq!(run_length(&table, 8), Some(4));
        // One element per run: not worth it.
        assert_eq!(run_length(&[0, 5, 1, 6], 2), None);
        // A whole row consecutive: one segment.
        assert_eq!(run_length(&[3, 4, 5, 6, 7, 8], 6), Some(6));
    }
}

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
//! The take's table, row by row of K = segments · s, must consist of runs of s ≥ 4 consecutive
//! source positions (a stencil point's channels); A must be the take's output read as is, and
//! the gemm its only reader. The gemm then sums each element's terms in the same order as over
//! the gathered A ([`super::gemm::gemm_stencil`]): the same bits.
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
//! The GPU generators ignore both (they run every step); [`super::plan::Plan::fill_elided`]
//! runs the skipped steps where their outputs are wanted (the node-by-node comparisons).

use std::sync::Arc;

use super::ir::Ir;
use super::plan::Step;
use super::view::View;

/// Shortest run worth reading in place (shorter ones: the take's copy is as cheap).
const MIN_RUN: usize = 4;

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

/// Mark the gemms of `steps` that can read their A through a take's source (setting their
/// `stencil`) and the puts that can compute their source's rows themselves (setting their
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
    for j in 0..steps.len() {
        let Step::MatMul { a, b, .. } = &steps[j] else {
            continue;
        };
        let Some(t) = producer[a.0] else { continue };
        let Step::Take {
            src, table, in_row, ..
        } = &steps[t]
        else {
            continue;
        };
        let r = a.1.axes.len();
        let k = a.1.axes[r - 1].len;
        let shared_b = b.1.axes[..r - 2].iter().all(|x| x.stride == 0);
        if readers[a.0] != 1
            || b.0 == a.0
            || required.contains(&a.0)
            || !a.1.is_identity(ir.nodes[a.0].len)
            || !shared_b
            || k == 0
            || k > max_k
            || !table.len().is_multiple_of(k)
        {
            continue;
        }
        let Some(s) = run_length(table, k) else {
            continue;
        };
        let offsets: Arc<[u32]> = table.iter().step_by(s).copied().collect();
        let stencil = StencilA {
            src: *src,
            in_row: *in_row,
            p: table.len() / k,
            s,
            offsets,
        };
        if let Step::MatMul { stencil: st, .. } = &mut steps[j] {
            *st = Some(Arc::new(stencil));
            elided[t] = true;
        }
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

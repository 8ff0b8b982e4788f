//! The CPU executor: runs one step of a plan over a range of its **units** on one worker.
//!
//! Every step's work is a range of independent units ([`units`]): output elements for a
//! fused kernel, outputs for a reduction, rows of M for a gemm, coordinates for the spline,
//! table rows for a gather. Running `[0, units)` is the whole step; the scheduler
//! ([`super::tile`]) runs sub-ranges on different workers, or the same batch rows of a whole
//! run of steps one tile after another while they are in cache.
//!
//! A fused kernel is interpreted over chunks of [`CHUNK`] elements: its leaves are gathered
//! through their strided views (contiguous ones are read in place), then each SSA instruction
//! is a tight loop the compiler vectorises. Nothing is allocated while running.
//!
//! [`exec`] is compiled once per instruction-set level ([`super::simd`]): its body and every
//! kernel it calls are inlined into a function with that level's target features, and the
//! worker's level picks the copy.

use super::access::{copy_short, Read, Shared};
use super::gemm::{Finish, Strided};
use super::ir::{BinOp, RedOp, UnOp};
use super::plan::{Epilogue, Instr, Kernel, Step};
use super::scalar::Scalar;
use super::simd::{self, ARead, Isa, Level};
use crate::error::{Error, Result};

/// Elements processed per pass of a fused kernel.
pub const CHUNK: usize = 256;

/// Scratch of one worker thread: the register file of fused kernels and reduction space.
#[derive(Debug, Clone)]
pub struct Worker<T> {
    pub(super) regs: Vec<T>,
    pub(super) scratch: Vec<T>,
    /// Rows a step computes instead of reading them from a step the CPU skips
    /// ([`super::stencil`]): a gemm's product that a put adds up, a take's row a gemm reads;
    /// and a scatter's sum of rows.
    pub(super) rows: Vec<T>,
    /// The instruction-set level its steps run with (one the CPU has).
    pub(super) simd: Level,
}

/// The buffers of one run, shared by the workers.
///
/// Safety contract (upheld by the scheduler): while steps run concurrently, each worker writes
/// only its own output range and reads only elements that no other worker writes during that
/// time (rows of its own tile, or buffers finished before the parallel region began). Sources
/// are handed out as [`Shared`] buffers, never as slices of a whole buffer: references are made
/// only to the elements an access touches (see [`super::access`]), so a worker reading one
/// part of a buffer never holds a reference that overlaps another worker's writes.
pub struct Bufs<T> {
    ptrs: Vec<(*mut T, usize)>,
}

// SAFETY: see the contract above; the pointers are only dereferenced under it.
unsafe impl<T: Send> Send for Bufs<T> {}
unsafe impl<T: Sync> Sync for Bufs<T> {}

impl<T: Scalar> Bufs<T> {
    /// Pointers to every node's buffer: declared inputs read from `store`, computed nodes
    /// from `bufs`.
    pub fn new(nodes: &[super::ir::Node], bufs: &mut [Vec<T>], store: &[Vec<T>]) -> Bufs<T> {
        let ptrs = nodes
            .iter()
            .zip(bufs.iter_mut())
            .map(|(n, b)| match n.op {
                super::ir::Op::Input(i) => (store[i].as_ptr() as *mut T, store[i].len()),
                _ => (b.as_mut_ptr(), b.len()),
            })
            .collect();
        Bufs { ptrs }
    }

    /// The buffer of `node`, for reading the elements this worker may read.
    #[inline]
    pub fn src(&self, node: usize) -> Shared<'_, T> {
        let (p, n) = self.ptrs[node];
        // SAFETY: a live allocation of n elements while `self` lives; accessed under the
        // contract above.
        unsafe { Shared::new(p, n) }
    }

    /// Length of `node`'s buffer.
    #[inline]
    pub fn len(&self, node: usize) -> usize {
        self.ptrs[node].1
    }

    /// Elements `[lo, hi)` of `node`'s buffer, for writing.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    fn out(&self, node: usize, lo: usize, hi: usize) -> Result<&mut [T]> {
        let (p, n) = self.ptrs[node];
        if lo > hi || hi > n {
            return Err(Error::Engine(format!(
                "output range {lo}..{hi} of a buffer of {n}"
            )));
        }
        // SAFETY: in bounds (checked); the scheduler gives each worker disjoint ranges.
        Ok(unsafe { std::slice::from_raw_parts_mut(p.add(lo), hi - lo) })
    }
}

/// Independent units of work of a step (see the module docs), given its output length; a
/// scatter's units are the logical elements it reads (its outputs are not in units).
pub fn units(step: &Step, out_len: usize) -> usize {
    match step {
        Step::Fused { .. } | Step::Reduce { .. } => out_len,
        Step::MatMul { b, .. } => {
            let r = b.1.axes.len();
            out_len / b.1.axes[r - 2].len.max(1)
        }
        Step::Spline { .. } => out_len / 2,
        Step::SplineAdjoint { rqs, .. } => out_len / (rqs.n_params() + 1),
        Step::Take { table, .. } => out_len / table.len().max(1),
        Step::Put { in_row, .. } => out_len / (*in_row).max(1),
        Step::Scatter { target, .. } => target.numel(),
        Step::Const { .. } => 1,
    }
}

/// Output elements written per unit (`None` for a scatter, whose outputs are not in units).
pub fn out_per_unit(step: &Step) -> Option<usize> {
    Some(match step {
        Step::Fused { .. } | Step::Reduce { .. } | Step::Const { .. } => 1,
        Step::MatMul { b, .. } => b.1.axes[b.1.axes.len() - 2].len,
        Step::Spline { .. } => 2,
        Step::SplineAdjoint { rqs, .. } => rqs.n_params() + 1,
        Step::Take { table, .. } => table.len(),
        Step::Put { in_row, .. } => *in_row,
        Step::Scatter { .. } => return None,
    })
}

/// Roughly the arithmetic of one unit (to decide whether splitting across threads pays).
pub fn work_per_unit(step: &Step) -> usize {
    match step {
        Step::Fused { kernel, .. } => kernel.code.len(),
        Step::Reduce { kernel, k, .. } => kernel.code.len() * k,
        Step::MatMul { a, b, .. } => {
            let r = a.1.axes.len();
            a.1.axes[r - 1].len * b.1.axes[r - 2].len
        }
        Step::Spline { rqs, .. } | Step::SplineAdjoint { rqs, .. } => 8 * rqs.n_params(),
        Step::Take { table, .. } => table.len(),
        Step::Put {
            in_row,
            table,
            gemm,
            ..
        } => {
            // With its gemm: 2·K multiply-adds an element of the source too.
            let k = gemm
                .as_ref()
                .map_or(0, |g| g.a.1.axes[g.a.1.axes.len() - 1].len);
            *in_row + 2 * k * table.len()
        }
        Step::Scatter { .. } | Step::Const { .. } => 1,
    }
}

/// What a run of a step covers: units `[lo, hi)`; for a scatter, `zero` is the output range
/// it owns (cleared before accumulating).
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// First unit.
    pub lo: usize,
    /// One past the last unit.
    pub hi: usize,
    /// Output elements a scatter clears first.
    pub zero: (usize, usize),
}

/// Run units `span` of `step` (writing node `out`'s buffer) on one worker, with the copy
/// compiled for the worker's instruction-set level.
///
/// The engine's own unit tests, a second build of the whole crate, run every step with the
/// baseline copy: they check what the kernels compute, the same at every level, and the
/// integration tests, which link the engine as it ships, run every level the CPU has
/// (`tests/tiling.rs`, `tests/engine.rs`). The AVX copies are most of the engine's compile
/// time, and were compiled twice for `cargo test`.
pub fn exec<T: Scalar>(step: &Step, span: Span, w: &mut Worker<T>, b: &Bufs<T>) -> Result<()> {
    match w.simd {
        #[cfg(all(target_arch = "x86_64", not(test)))]
        // SAFETY: a worker's level is one the CPU runs (`simd::check` where it is set).
        Level::Avx512 => unsafe { avx512::exec(step, span, w, b) },
        #[cfg(all(target_arch = "x86_64", not(test)))]
        // SAFETY: as above.
        Level::Avx2 => unsafe { avx2::exec(step, span, w, b) },
        _ => baseline::exec(step, span, w, b),
    }
}

// Each level's copy sits in a module of its own: rustc places a generic function's instances
// in the code-generation unit of the module that defines it, so the three copies (each with
// every kernel inlined: most of the engine's compile time) are optimised in parallel rather
// than one after another in a single unit.

#[cfg(all(target_arch = "x86_64", not(test)))]
mod avx512 {
    use super::{exec_with, simd, Bufs, Result, Scalar, Span, Step, Worker};

    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
    pub(super) unsafe fn exec<T: Scalar>(
        step: &Step,
        span: Span,
        w: &mut Worker<T>,
        b: &Bufs<T>,
    ) -> Result<()> {
        exec_with::<T, simd::Avx512>(step, span, w, b)
    }
}

#[cfg(all(target_arch = "x86_64", not(test)))]
mod avx2 {
    use super::{exec_with, simd, Bufs, Result, Scalar, Span, Step, Worker};

    #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
    pub(super) unsafe fn exec<T: Scalar>(
        step: &Step,
        span: Span,
        w: &mut Worker<T>,
        b: &Bufs<T>,
    ) -> Result<()> {
        exec_with::<T, simd::Avx2>(step, span, w, b)
    }
}

mod baseline {
    use super::{exec_with, simd, Bufs, Result, Scalar, Span, Step, Worker};

    pub(super) fn exec<T: Scalar>(
        step: &Step,
        span: Span,
        w: &mut Worker<T>,
        b: &Bufs<T>,
    ) -> Result<()> {
        exec_with::<T, simd::Baseline>(step, span, w, b)
    }
}

/// The executor's body, inlined into each level's copy.
#[inline(always)]
fn exec_with<T: Scalar, I: Isa>(
    step: &Step,
    span: Span,
    w: &mut Worker<T>,
    b: &Bufs<T>,
) -> Result<()> {
    let Span { lo, hi, .. } = span;
    if lo >= hi {
        return Ok(());
    }
    match step {
        Step::Const { out, v } => b.out(*out, 0, 1)?[0] = T::from_f64(*v),
        Step::Fused { out, kernel } => {
            let dst = b.out(*out, lo, hi)?;
            fill_consts(kernel, &mut w.regs);
            let mut done = 0;
            while done < dst.len() {
                let m = CHUNK.min(dst.len() - done);
                eval::<T, I>(kernel, b, &mut w.regs, lo + done, &mut dst[done..done + m]);
                done += m;
            }
        }
        Step::Reduce { out, op, kernel, k } => {
            let (k, op) = (*k, *op);
            let dst = b.out(*out, lo, hi)?;
            if k == 0 {
                dst.fill(match op {
                    RedOp::Sum => T::default(),
                    RedOp::Max => T::neg_infinity(),
                });
                return Ok(());
            }
            fill_consts(kernel, &mut w.regs);
            // Whole output rows per pass, at most CHUNK inputs at a time.
            let per = (CHUNK / k).max(1);
            let mut o = 0;
            while o < dst.len() {
                let cnt = per.min(dst.len() - o);
                let row0 = (lo + o) * k;
                let s = &mut w.scratch[..cnt * k];
                let mut p = 0;
                while p < cnt * k {
                    let m = CHUNK.min(cnt * k - p);
                    eval::<T, I>(kernel, b, &mut w.regs, row0 + p, &mut s[p..p + m]);
                    p += m;
                }
                for (d, seg) in dst[o..o + cnt].iter_mut().zip(s.chunks_exact(k)) {
                    *d = reduce(op, seg);
                }
                o += cnt;
            }
        }
        Step::MatMul {
            out,
            a,
            b: bm,
            epilogue,
            stencil,
            gather,
        } => {
            let n = bm.1.axes[bm.1.axes.len() - 2].len;
            let dst = b.out(*out, lo * n, hi * n)?;
            let gemm = Gemm {
                a,
                b: bm,
                epilogue: epilogue.as_ref(),
                stencil: stencil.as_deref(),
                gather: gather.as_deref(),
            };
            matmul::<T, I>(&gemm, lo, hi, b, dst, &mut w.rows)?
        }
        Step::Spline { out, x, theta, rqs } => {
            let (xs, th) = (b.src(*x), b.src(*theta));
            let p = rqs.n_params();
            if hi > xs.len() || th.len() != p * xs.len() {
                return Err(Error::Engine("spline: buffer sizes changed".into()));
            }
            let (xs, th, dst) = (
                xs.run(lo, hi),
                th.run(lo * p, hi * p),
                b.out(*out, 2 * lo, 2 * hi)?,
            );
            // Both arms are compiled into each level's copy; the constant I::FMA keeps one.
            if I::FMA {
                rqs.apply_with::<T, true>(xs, th, dst);
            } else {
                rqs.apply_with::<T, false>(xs, th, dst);
            }
        }
        Step::SplineAdjoint {
            out,
            x,
            theta,
            g,
            rqs,
        } => {
            let (xs, th, gs) = (b.src(*x), b.src(*theta), b.src(*g));
            let p = rqs.n_params();
            if hi > xs.len() || th.len() != p * xs.len() || gs.len() != 2 * xs.len() {
                return Err(Error::Engine("spline adjoint: buffer sizes changed".into()));
            }
            let dst = b.out(*out, (p + 1) * lo, (p + 1) * hi)?;
            let (xs, th, gs) = (
                xs.run(lo, hi),
                th.run(lo * p, hi * p),
                gs.run(2 * lo, 2 * hi),
            );
            if I::FMA {
                rqs.adjoint_with::<T, true>(xs, th, gs, dst);
            } else {
                rqs.adjoint_with::<T, false>(xs, th, gs, dst);
            }
        }
        Step::Take {
            out,
            src,
            table,
            runs,
            in_row,
        } => {
            let (s, m, in_row) = (b.src(*src), table.len(), *in_row);
            if s.len() < hi * in_row {
                return Err(Error::Engine("take: source length changed".into()));
            }
            let dst = b.out(*out, lo * m, hi * m)?;
            for (r, row) in (lo..hi).zip(dst.chunks_mut(m)) {
                take_row(row, s.run(r * in_row, (r + 1) * in_row), runs);
            }
        }
        Step::Put {
            out,
            src,
            table,
            in_row,
            gemm,
        } => {
            let (m, in_row) = (table.len(), *in_row);
            let dst = b.out(*out, lo * in_row, hi * in_row)?;
            let Some(gm) = gemm else {
                let g = b.src(*src);
                if g.len() < hi * m {
                    return Err(Error::Engine("put: source length changed".into()));
                }
                put_rows(dst, g.run(lo * m, hi * m), table, in_row);
                return Ok(());
            };
            // The source's rows, q per output row, computed a few output rows at a time.
            let q = m / gm.n;
            let per_call = (super::stencil::PUT_CHUNK / m).max(1);
            let gemm = Gemm {
                a: &gm.a,
                b: &gm.b,
                epilogue: None,
                stencil: None,
                gather: None,
            };
            let mut r0 = lo;
            while r0 < hi {
                let r1 = hi.min(r0 + per_call);
                let g = &mut w.rows[..(r1 - r0) * m];
                matmul::<T, I>(&gemm, r0 * q, r1 * q, b, g, &mut [])?;
                put_rows(
                    &mut dst[(r0 - lo) * in_row..(r1 - lo) * in_row],
                    g,
                    table,
                    in_row,
                );
                r0 = r1;
            }
        }
        Step::Scatter { out, g, target } => {
            // The target view addresses the whole buffer; this worker touches only the
            // positions its units map to (inside `zero` when tiled), one at a time.
            let (z0, z1) = span.zero;
            b.out(*out, z0, z1)
                .map_err(|_| Error::Engine("scatter: output range".into()))?
                .fill(T::default());
            let mut full = b.src(*out);
            target.check_bounds(Read::len(&full))?;
            let gbuf = b.src(g.0);
            g.1.check_bounds(gbuf.len())?;
            // Rows summed onto one row, read in order: the rows added up first (a dense,
            // vectorised loop), then the sum scattered once. Each output element adds its
            // terms in the same order as below (row after row, from zero): the same bits; the
            // view's iteration, a run at a time, cost more than the adds.
            if let (Some(m), Some(g0)) = (target.row_sum(), g.1.dense_start()) {
                if m > 0 && m <= w.rows.len() && lo % m == 0 && hi % m == 0 {
                    let sum = &mut w.rows[..m];
                    sum.fill(T::default());
                    for row in gbuf.run(g0 + lo, g0 + hi).chunks_exact(m) {
                        super::access::Write::add_run(sum, 0, row);
                    }
                    target.scatter_add(sum, 0, &mut full);
                    return Ok(());
                }
            }
            let scratch = &mut w.scratch[..CHUNK];
            let mut start = lo;
            while start < hi {
                let m = CHUNK.min(hi - start);
                g.1.gather(&gbuf, start, &mut scratch[..m]);
                target.scatter_add(&scratch[..m], start, &mut full);
                start += m;
            }
        }
    }
    Ok(())
}

/// A gemm as the executor runs it: a [`Step::MatMul`]'s parts (or those of the gemm a put
/// computes itself).
struct Gemm<'s> {
    a: &'s (usize, super::view::View),
    b: &'s (usize, super::view::View),
    epilogue: Option<&'s Epilogue>,
    stencil: Option<&'s super::stencil::StencilA>,
    gather: Option<&'s super::stencil::TakeRows>,
}

/// Rows `[lo, hi)` (over the merged batch × M) of a batched gemm, into `dst` (their n
/// columns each); `rows` holds a gathered B ([`super::stencil::TakeRows`]).
#[inline(always)]
fn matmul<T: Scalar, I: Isa>(
    gemm: &Gemm,
    lo: usize,
    hi: usize,
    b: &Bufs<T>,
    dst: &mut [T],
    rows: &mut [T],
) -> Result<()> {
    let Gemm {
        a,
        b: bm,
        epilogue,
        stencil,
        gather,
    } = *gemm;
    let (av, bv) = (&a.1, &bm.1);
    let bbuf = b.src(bm.0);
    let r = av.axes.len();
    let (m, k, n) = (av.axes[r - 2].len, av.axes[r - 1].len, bv.axes[r - 2].len);
    if m * n * k == 0 {
        // Nothing to read (an empty axis): check_bounds would prove nothing.
        dst.fill(T::default());
        return Ok(());
    }
    bv.check_bounds(bbuf.len())?;
    // The epilogue on finished rows: c = act(c + bias).
    let bias: Option<&[T]> =
        match epilogue.and_then(|e| e.bias) {
            Some((node, off)) => Some(b.src(node).slice(off, off + n).ok_or_else(|| {
                Error::Engine("gemm epilogue: bias row outside its buffer".into())
            })?),
            None => None,
        };
    let finish = Finishing::<T, I> {
        bias,
        act: epilogue.and_then(|e| e.act),
        n,
        isa: std::marker::PhantomData,
    };
    let (rsb, csb) = (bv.axes[r - 1].stride, bv.axes[r - 2].stride);
    // B's k × n elements as rows (n contiguous): in place, or copied where B is read across its
    // rows (the autograd copies the transposed weights of x̄ = ȳ·Wᵀ into rows; other such
    // views are rare).
    let b_rows = |bo: usize| -> Option<Vec<T>> {
        (csb != 1).then(|| {
            let mut rows = vec![T::default(); k * n];
            for j in 0..n {
                for kk in 0..k {
                    rows[kk * n + j] = bbuf.at(bo + kk * rsb + j * csb);
                }
            }
            rows
        })
    };
    if let Some(st) = stencil {
        // A through the take's source (the analysis checked: A is the take's output read as
        // is, B shared by every batch entry).
        let src = b.src(st.src);
        let sten = super::gemm::Stencil {
            p: st.p,
            in_row: st.in_row,
            s: st.s,
            offsets: &st.offsets,
            row0: lo,
        };
        let bo = usize::try_from(bv.offset)
            .map_err(|_| Error::Engine("gemm: a view starts before its buffer".into()))?;
        if src.len() < hi.div_ceil(st.p) * st.in_row {
            return Err(Error::Engine(
                "gemm: the stencil's source is too short".into(),
            ));
        }
        let sa = ARead::Stencil(&sten);
        match b_rows(bo) {
            None => I::gemm(hi - lo, k, n, &src, sa, &bbuf, bo, rsb, dst, &finish),
            Some(rows) => I::gemm(hi - lo, k, n, &src, sa, rows.as_slice(), 0, n, dst, &finish),
        }
        return Ok(());
    }
    let abuf = b.src(a.0);
    av.check_bounds(abuf.len())?;
    let mut u = lo;
    while u < hi {
        let (bi, m0) = (u / m, u % m);
        let m1 = m.min(m0 + (hi - u));
        // Offsets of batch item bi (row-major over the leading axes).
        let (mut ao, mut bo) = (av.offset, bv.offset);
        let mut rest = bi;
        for ax in (0..r - 2).rev() {
            let j = rest % av.axes[ax].len;
            rest /= av.axes[ax].len;
            ao += (j * av.axes[ax].stride) as i64;
            bo += (j * bv.axes[ax].stride) as i64;
        }
        ao += (m0 * av.axes[r - 2].stride) as i64;
        let c = &mut dst[(u - lo) * n..(u - lo + m1 - m0) * n];
        let (Ok(ao), Ok(bo)) = (usize::try_from(ao), usize::try_from(bo)) else {
            return Err(Error::Engine(
                "gemm: a view starts before its buffer".into(),
            ));
        };
        let sa = ARead::Strided(Strided {
            offset: ao,
            rs: av.axes[r - 2].stride,
            cs: av.axes[r - 1].stride,
        });
        if let Some(g) = gather {
            // B within take row bo / row (the analysis checked), gathered once per entry from
            // the take's source (B's rows are read in place: csb = 1).
            let (row, inner) = (bo / g.row, bo % g.row);
            let src = b.src(g.src);
            if src.len() < (row + 1) * g.in_row || rows.len() < g.row {
                return Err(Error::Engine(
                    "gemm: a gathered B outside its source".into(),
                ));
            }
            let rows = &mut rows[..g.row];
            take_row(rows, src.run(row * g.in_row, (row + 1) * g.in_row), &g.runs);
            I::gemm(m1 - m0, k, n, &abuf, sa, &*rows, inner, rsb, c, &finish);
            u += m1 - m0;
            continue;
        }
        match b_rows(bo) {
            None => I::gemm(m1 - m0, k, n, &abuf, sa, &bbuf, bo, rsb, c, &finish),
            Some(rows) => I::gemm(m1 - m0, k, n, &abuf, sa, rows.as_slice(), 0, n, c, &finish),
        }
        u += m1 - m0;
    }
    Ok(())
}

/// One row of a take: the table's runs (first, length) of `src_row`, one after another.
#[inline(always)]
fn take_row<T: Scalar>(row: &mut [T], src_row: &[T], runs: &[(u32, u32)]) {
    let mut at = 0;
    for &(first, len) in runs {
        let (first, len) = (first as usize, len as usize);
        copy_short(&mut row[at..at + len], &src_row[first..first + len]);
        at += len;
    }
}

/// Rows of a put (`in_row` each) = the sums of their `g` rows (`table.len()` each) scattered
/// by the table, in order.
#[inline(always)]
fn put_rows<T: Scalar>(dst: &mut [T], g: &[T], table: &[u32], in_row: usize) {
    for (row, g_row) in dst.chunks_mut(in_row).zip(g.chunks(table.len())) {
        row.fill(T::default());
        for (&v, &k) in g_row.iter().zip(table.iter()) {
            row[k as usize] += v;
        }
    }
}

/// The gemm's epilogue on finished rows: c = act(c + bias).
struct Finishing<'a, T, I> {
    bias: Option<&'a [T]>,
    act: Option<UnOp>,
    n: usize,
    isa: std::marker::PhantomData<I>,
}

impl<T: Scalar, I: Isa> Finish<T> for Finishing<'_, T, I> {
    #[inline(always)]
    fn rows(&self, rows: &mut [T]) {
        if let Some(bias) = self.bias {
            for row in rows.chunks_exact_mut(self.n) {
                for (x, &v) in row.iter_mut().zip(bias) {
                    *x += v;
                }
            }
        }
        if let Some(u) = self.act {
            unary_in_place::<T, I>(u, rows);
        }
    }
}

#[inline(always)]
fn fill_consts<T: Scalar>(kernel: &Kernel, regs: &mut [T]) {
    for (r, ins) in kernel.code.iter().enumerate() {
        if let Instr::Const(v) = ins {
            regs[r * CHUNK..(r + 1) * CHUNK].fill(T::from_f64(*v));
        }
    }
}

/// Evaluate elements `[start, start + m)` of a kernel into `dst` (length m ≤ CHUNK).
#[inline(always)]
fn eval<T: Scalar, I: Isa>(
    kernel: &Kernel,
    b: &Bufs<T>,
    regs: &mut [T],
    start: usize,
    dst: &mut [T],
) {
    let m = dst.len();
    let last = kernel.code.len() - 1;
    for (r, ins) in kernel.code.iter().enumerate() {
        if kernel.direct[r].is_some() && r != last {
            continue;
        }
        let (before, after) = regs.split_at_mut(r * CHUNK);
        let operand = |a: usize| -> &[T] {
            match (kernel.direct[a], &kernel.code[a]) {
                (Some(off), Instr::Load(k)) => {
                    let run = b
                        .src(kernel.leaves[*k].0)
                        .slice(off + start, off + start + m);
                    run.expect("a direct leaf's run lies inside its buffer (checked by the plan)")
                }
                _ => &before[a * CHUNK..a * CHUNK + m],
            }
        };
        let d: &mut [T] = if r == last {
            &mut *dst
        } else {
            &mut after[..m]
        };
        match *ins {
            Instr::Load(k) => {
                let (node, view) = &kernel.leaves[k];
                view.gather(&b.src(*node), start, d);
            }
            Instr::Const(v) => {
                if r == last {
                    d.fill(T::from_f64(v));
                }
            }
            Instr::Un(u, a) => unary::<T, I>(u, operand(a), d),
            Instr::Bin(op, a, c) => binary(op, operand(a), operand(c), d),
        }
    }
}

#[inline(always)]
fn reduce<T: Scalar>(op: RedOp, seg: &[T]) -> T {
    match op {
        RedOp::Sum => {
            let mut acc = T::default();
            for &x in seg {
                acc += x;
            }
            acc
        }
        RedOp::Max => {
            let mut acc = T::neg_infinity();
            for &x in seg {
                if x > acc || x.is_nan() {
                    acc = x;
                }
            }
            acc
        }
    }
}

// The elementwise loops are plain `for` loops, not `for_each` with a closure: a closure the
// optimiser leaves out of line is compiled at the baseline instruction set, outside the
// executor's per-level copies (measured: `tanh` in the gemm epilogue at 9 % of the time).
/// 2ˣ, log₂ x and tanh x with the level's arithmetic: multiply-adds fused where it has FMA
/// (`I::FMA` is a constant in each copy, so the choice costs nothing inside the loops).
#[inline(always)]
fn exp2<T: Scalar, I: Isa>(x: T) -> T {
    if I::FMA {
        x.exp2_fused()
    } else {
        x.exp2()
    }
}

#[inline(always)]
fn log2<T: Scalar, I: Isa>(x: T) -> T {
    if I::FMA {
        x.log2_fused()
    } else {
        x.log2()
    }
}

#[inline(always)]
fn tanh<T: Scalar, I: Isa>(x: T) -> T {
    if I::FMA {
        x.tanh_fused()
    } else {
        x.tanh()
    }
}

#[inline(always)]
fn unary_in_place<T: Scalar, I: Isa>(u: UnOp, d: &mut [T]) {
    match u {
        UnOp::Log2 => {
            for d in d {
                *d = log2::<T, I>(*d);
            }
        }
        UnOp::Exp2 => {
            for d in d {
                *d = exp2::<T, I>(*d);
            }
        }
        UnOp::Sin => {
            for d in d {
                *d = d.sin();
            }
        }
        UnOp::Sqrt => {
            for d in d {
                *d = d.sqrt();
            }
        }
        UnOp::Recip => {
            for d in d {
                *d = d.recip();
            }
        }
        UnOp::Tanh => {
            for d in d {
                *d = tanh::<T, I>(*d);
            }
        }
    }
}

#[inline(always)]
fn unary<T: Scalar, I: Isa>(u: UnOp, a: &[T], d: &mut [T]) {
    let it = d.iter_mut().zip(a);
    match u {
        UnOp::Log2 => {
            for (d, &a) in it {
                *d = log2::<T, I>(a);
            }
        }
        UnOp::Exp2 => {
            for (d, &a) in it {
                *d = exp2::<T, I>(a);
            }
        }
        UnOp::Sin => {
            for (d, &a) in it {
                *d = a.sin();
            }
        }
        UnOp::Sqrt => {
            for (d, &a) in it {
                *d = a.sqrt();
            }
        }
        UnOp::Recip => {
            for (d, &a) in it {
                *d = a.recip();
            }
        }
        UnOp::Tanh => {
            for (d, &a) in it {
                *d = tanh::<T, I>(a);
            }
        }
    }
}

#[inline(always)]
fn binary<T: Scalar>(b: BinOp, a: &[T], c: &[T], d: &mut [T]) {
    let one = T::from_f64(1.0);
    let zero = T::default();
    let it = d.iter_mut().zip(a.iter().zip(c));
    match b {
        BinOp::Add => {
            for (d, (&a, &c)) in it {
                *d = a + c;
            }
        }
        BinOp::Mul => {
            for (d, (&a, &c)) in it {
                *d = a * c;
            }
        }
        BinOp::Mod => {
            for (d, (&a, &c)) in it {
                *d = a.rem(c);
            }
        }
        BinOp::Lt => {
            for (d, (&a, &c)) in it {
                *d = if a < c { one } else { zero };
            }
        }
        BinOp::Eq => {
            for (d, (&a, &c)) in it {
                *d = if a == c { one } else { zero };
            }
        }
    }
}

/// Run `f(i, worker i)` for i in 0..n on the first `n` workers at once (one parallel region);
/// the first error any of them returns.
pub fn on_workers<T: Scalar>(
    workers: &mut [Worker<T>],
    n: usize,
    f: impl Fn(usize, &mut Worker<T>) -> Result<()> + Sync,
) -> Result<()> {
    let err = std::sync::Mutex::new(None);
    rayon::scope(|sc| {
        for (i, w) in workers.iter_mut().enumerate().take(n) {
            let (f, err) = (&f, &err);
            sc.spawn(move |_| {
                if let Err(e) = f(i, w) {
                    *err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            });
        }
    });
    err.into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .map_or(Ok(()), Err)
}

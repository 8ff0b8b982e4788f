//! Concrete strided views: how a kernel reads a buffer.
//!
//! A luminal edge carries a `ShapeTracker` (physical dims, a logical→physical axis
//! permutation, broadcast ("fake") flags, slices and padding, all symbolic). Once the
//! dynamic dimensions are known we turn it into a [`View`]:
//!
//! ```text
//! phys(j) = offset + Σ_a j_a · stride_a          for a logical index j = (j_0, …, j_{r-1})
//! valid(j) = ∀a: lo_a ≤ j_a < hi_a               (outside: the element reads as 0, i.e. padding)
//! ```
//!
//! For a tracker axis with physical size `dim`, padding `(p0, p1)` and slice `[s0, s1)` (in
//! padded coordinates) the logical length is `min(dim + p0 + p1, s1) − s0`, the physical
//! coordinate of logical `j` is `j + s0 − p0`, and `j` is valid iff that coordinate lies in
//! `[0, dim)`. This is our own index math: luminal 0.2.0's `ShapeTracker::shape()` gets the
//! length of a slice bounded at both ends wrong, and its index expression mixes coordinates when
//! a dimension is both padded and sliced.

use luminal::prelude::ShapeTracker;
use rustc_hash::FxHashMap;

use super::access::{copy_short, fill_short, Read, Write};
use crate::error::{Error, Result};

/// One logical axis of a [`View`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Axis {
    /// Logical length.
    pub len: usize,
    /// Elements skipped in the buffer per logical step (0 for a broadcast axis).
    pub stride: usize,
    /// First valid logical index on this axis.
    pub lo: usize,
    /// One past the last valid logical index on this axis.
    pub hi: usize,
}

/// A strided, possibly padded, view of a flat buffer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct View {
    /// Buffer position of logical index 0 (may be negative when axis 0 is padded).
    pub offset: i64,
    /// Axes in logical order.
    pub axes: Vec<Axis>,
}

impl View {
    /// Row-major contiguous view of `shape`.
    pub fn contiguous(shape: &[usize]) -> View {
        let mut axes = Vec::with_capacity(shape.len());
        let mut acc = 1usize;
        for &len in shape.iter().rev() {
            axes.push(Axis {
                len,
                stride: acc,
                lo: 0,
                hi: len,
            });
            acc *= len;
        }
        axes.reverse();
        View { offset: 0, axes }
    }

    /// A view of a single scalar broadcast to `shape`.
    pub fn broadcast_scalar(shape: &[usize]) -> View {
        View {
            offset: 0,
            axes: shape
                .iter()
                .map(|&len| Axis {
                    len,
                    stride: 0,
                    lo: 0,
                    hi: len,
                })
                .collect(),
        }
    }

    /// Logical shape.
    pub fn shape(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.len).collect()
    }

    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.axes.iter().map(|a| a.len).product()
    }

    /// Whether some logical elements are padding (read as zero).
    pub fn is_masked(&self) -> bool {
        self.axes.iter().any(|a| a.lo > 0 || a.hi < a.len)
    }

    /// Whether reading through this view is the same as reading the whole buffer of
    /// `buf_len` elements in order.
    pub fn is_identity(&self, buf_len: usize) -> bool {
        self.numel() == buf_len && self.dense_start() == Some(0)
    }

    /// Where this view reads `numel` consecutive buffer elements in order: the first one's
    /// position (unmasked, row-major strides).
    pub fn dense_start(&self) -> Option<usize> {
        let mut acc = 1usize;
        for a in self.axes.iter().rev() {
            if a.len != 1 && a.stride != acc {
                return None;
            }
            acc *= a.len;
        }
        if self.is_masked() {
            return None;
        }
        usize::try_from(self.offset).ok()
    }

    /// Where this view is `[rows, row…]` with the rows broadcast (stride 0) onto one row whose
    /// m elements are distinct positions (a scatter through it sums rows: a bias's gradient, a
    /// weight gradient summed over the batch): m.
    pub fn row_sum(&self) -> Option<usize> {
        let (rows, row) = self.axes.split_first()?;
        if rows.stride != 0 || self.is_masked() {
            return None;
        }
        // Distinct positions: sorted by stride, each axis steps past all the smaller ones reach.
        // (At most 8 axes: no allocation, it runs in the executor.)
        let mut axes = [(0usize, 0usize); 8];
        let mut n = 0;
        for a in row.iter().filter(|a| a.len > 1) {
            *axes.get_mut(n)? = (a.stride, a.len);
            n += 1;
        }
        axes[..n].sort_unstable();
        let mut reach = 0;
        for &(stride, len) in &axes[..n] {
            if stride <= reach {
                return None;
            }
            reach += (len - 1) * stride;
        }
        Some(row.iter().map(|a| a.len).product())
    }

    /// Reorder the axes: new axis `i` is old axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> View {
        View {
            offset: self.offset,
            axes: perm.iter().map(|&p| self.axes[p]).collect(),
        }
    }

    /// Insert a broadcast axis of length `len` at position `at`.
    pub fn expand(&self, at: usize, len: usize) -> View {
        let mut v = self.clone();
        v.axes.insert(
            at,
            Axis {
                len,
                stride: 0,
                lo: 0,
                hi: len,
            },
        );
        v
    }

    /// Merge neighbouring axes and drop unit axes where that does not change the element
    /// order: the inner loops of the kernels then run over long strided rows.
    pub fn simplified(&self) -> View {
        let mut axes: Vec<Axis> = Vec::with_capacity(self.axes.len());
        for a in &self.axes {
            if a.len == 1 && a.lo == 0 && a.hi == 1 {
                continue;
            }
            if let Some(prev) = axes.last_mut() {
                let unmasked = prev.lo == 0 && prev.hi == prev.len && a.lo == 0 && a.hi == a.len;
                if unmasked && prev.stride == a.stride * a.len {
                    let len = prev.len * a.len;
                    *prev = Axis {
                        len,
                        stride: a.stride,
                        lo: 0,
                        hi: len,
                    };
                    continue;
                }
            }
            axes.push(*a);
        }
        View {
            offset: self.offset,
            axes,
        }
    }

    /// Smallest and largest buffer positions read by valid elements (None if none is valid).
    pub fn extent(&self) -> Option<(i64, i64)> {
        let mut lo = self.offset;
        let mut hi = self.offset;
        for a in &self.axes {
            if a.lo >= a.hi {
                return None;
            }
            lo += a.lo as i64 * a.stride as i64;
            hi += (a.hi as i64 - 1) * a.stride as i64;
        }
        Some((lo, hi))
    }

    /// Check that every valid element lies inside a buffer of `buf_len` elements.
    pub fn check_bounds(&self, buf_len: usize) -> Result<()> {
        if let Some((lo, hi)) = self.extent() {
            if lo < 0 || hi >= buf_len as i64 {
                return Err(Error::Engine(format!(
                    "view reads [{lo}, {hi}] from a buffer of {buf_len} elements"
                )));
            }
        }
        Ok(())
    }

    /// Buffer position of the logical multi-index `j`, or None for padding.
    pub fn position(&self, j: &[usize]) -> Option<usize> {
        let mut p = self.offset;
        for (a, &ji) in self.axes.iter().zip(j) {
            if ji < a.lo || ji >= a.hi {
                return None;
            }
            p += ji as i64 * a.stride as i64;
        }
        Some(p as usize)
    }

    /// Logical elements `[start, start + n)` as runs along the last axis ([`Runs`]). An
    /// iterator, not a visitor taking a closure: the closure's body was compiled out of line, at
    /// the baseline instruction set, and called once per run (per element for the
    /// concatenation of one-channel features), with `memcpy` and `memset` calls inside.
    #[inline(always)]
    fn runs(&self, start: usize, n: usize) -> Runs<'_> {
        let r = self.axes.len();
        let mut idx = [0usize; 8];
        let mut rem = start;
        for a in (0..r).rev() {
            idx[a] = rem % self.axes[a].len;
            rem /= self.axes[a].len;
        }
        let mut runs = Runs {
            view: self,
            idx,
            base: self.offset,
            valid: true,
            k: 0,
            n,
            last_len: if r == 0 { 1 } else { self.axes[r - 1].len },
            masked: r > 1 && self.axes[..r - 1].iter().any(|a| a.lo > 0 || a.hi < a.len),
        };
        if r > 0 {
            for (&i, ax) in idx.iter().zip(&self.axes[..r - 1]) {
                runs.base += i as i64 * ax.stride as i64;
            }
            runs.valid = !runs.masked || runs.outer_valid();
        }
        runs
    }

    fn last_axis(&self) -> Axis {
        self.axes.last().copied().unwrap_or(Axis {
            len: 1,
            stride: 0,
            lo: 0,
            hi: 1,
        })
    }

    /// The part `[a, b)` (a ≤ b, as offsets into the run) of the last-axis indices
    /// `[j0, j0 + run)` that lies inside the axis's valid range `[lo, hi)`.
    #[inline(always)]
    fn valid_part(last: &Axis, j0: usize, run: usize) -> (usize, usize) {
        let (a, b) = (last.lo.clamp(j0, j0 + run), last.hi.clamp(j0, j0 + run));
        (a - j0, b.max(a) - j0)
    }

    /// The whole rows (last axis, `l` elements each) among logical elements `[start, start +
    /// n)` of a view of rank ≥ 2: `(head, tail, planes)`, where elements `[head, tail)` (relative
    /// to `start`) are whole rows, listed plane by plane (a plane: the axes before the last two
    /// fixed) with the element where the plane's first row starts, that row's index on the axis
    /// before the last, the number of rows, the plane's base position and whether it is inside
    /// its axes' valid ranges. The partial rows `[0, head)` and `[tail, n)` are the caller's.
    #[inline(always)]
    fn planes(&self, start: usize, n: usize, l: usize) -> (usize, usize, Planes<'_>) {
        let head = ((l - start % l) % l).min(n);
        let rows = (n - head) / l;
        let row = (start + head) / l;
        let planes = Planes {
            view: self,
            row,
            end: row + rows,
            k: head,
            l,
        };
        (head, head + rows * l, planes)
    }

    /// For rows (last axis) of `L` elements, of a view of rank ≥ 2: the axis before the last,
    /// and each column's validity and offset in the buffer from the row's start.
    #[inline(always)]
    fn row_pattern<const L: usize>(&self) -> (Axis, [bool; L], [i64; L]) {
        let r = self.axes.len();
        let (last, inner) = (self.axes[r - 1], self.axes[r - 2]);
        let cols = std::array::from_fn(|j| j >= last.lo && j < last.hi);
        let offs = std::array::from_fn(|j| (j * last.stride) as i64);
        (inner, cols, offs)
    }

    /// [`View::gather`] of a view of rank ≥ 2 whose rows (last axis) are `L` elements long, as
    /// in the concatenation of a few channels, where a run per row (the general path) costs
    /// more than the row's copy: whole rows in a counted loop over the axis before the last,
    /// the row's mask and offsets known in advance; a partial row at either end by runs.
    #[inline(always)]
    fn gather_rows<const L: usize, T: Copy + Default, S: Read<T> + ?Sized>(
        &self,
        src: &S,
        start: usize,
        out: &mut [T],
    ) {
        let (inner, cols, offs) = self.row_pattern::<L>();
        let (head, tail, planes) = self.planes(start, out.len(), L);
        self.gather_runs(src, start, &mut out[..head]);
        for Plane {
            k,
            i0,
            rows,
            base,
            valid,
        } in planes
        {
            let block = out[k..k + rows * L].chunks_exact_mut(L);
            for (i, row) in (i0..i0 + rows).zip(block) {
                let ok = valid && i >= inner.lo && i < inner.hi;
                let b = base + (i * inner.stride) as i64;
                for j in 0..L {
                    row[j] = if ok && cols[j] {
                        src.at((b + offs[j]) as usize)
                    } else {
                        T::default()
                    };
                }
            }
        }
        self.gather_runs(src, start + tail, &mut out[tail..]);
    }

    /// Read logical elements `[start, start + out.len())` (row-major order) into `out`;
    /// padding reads as zero.
    #[inline(always)]
    pub fn gather<T: Copy + Default, S: Read<T> + ?Sized>(
        &self,
        src: &S,
        start: usize,
        out: &mut [T],
    ) {
        match (self.axes.len() >= 2, self.last_axis().len) {
            (true, 2) => self.gather_rows::<2, T, S>(src, start, out),
            (true, 3) => self.gather_rows::<3, T, S>(src, start, out),
            (true, 4) => self.gather_rows::<4, T, S>(src, start, out),
            _ => self.gather_runs(src, start, out),
        }
    }

    /// [`View::gather`] a run along the last axis at a time.
    #[inline(always)]
    fn gather_runs<T: Copy + Default, S: Read<T> + ?Sized>(
        &self,
        src: &S,
        start: usize,
        out: &mut [T],
    ) {
        let last = self.last_axis();
        for Run {
            k,
            base,
            j0,
            len: run,
            valid,
        } in self.runs(start, out.len())
        {
            let dst = &mut out[k..k + run];
            if !valid {
                fill_short(dst, T::default());
                continue;
            }
            // Padding before and after the run's valid part reads as zero.
            let (a, b) = Self::valid_part(&last, j0, run);
            fill_short(&mut dst[..a], T::default());
            fill_short(&mut dst[b..], T::default());
            if b == a {
                continue;
            }
            let (dst, p0) = (
                &mut dst[a..b],
                (base + (j0 + a) as i64 * last.stride as i64) as usize,
            );
            match last.stride {
                1 => copy_short(dst, src.run(p0, p0 + dst.len())),
                0 => fill_short(dst, src.at(p0)),
                s => {
                    for (t, d) in dst.iter_mut().enumerate() {
                        *d = src.at(p0 + t * s);
                    }
                }
            }
        }
    }

    /// Adjoint of [`View::gather`]: add `vals` (logical elements `[start, start + len)`) into
    /// the buffer positions they were read from; padding positions are dropped.
    #[inline(always)]
    pub fn scatter_add<T: Copy + std::ops::AddAssign, D: Write<T> + ?Sized>(
        &self,
        vals: &[T],
        start: usize,
        dst: &mut D,
    ) {
        match (self.axes.len() >= 2, self.last_axis().len) {
            (true, 2) => self.scatter_rows::<2, T, D>(vals, start, dst),
            (true, 3) => self.scatter_rows::<3, T, D>(vals, start, dst),
            (true, 4) => self.scatter_rows::<4, T, D>(vals, start, dst),
            _ => self.scatter_runs(vals, start, dst),
        }
    }

    /// [`View::scatter_add`] of a view of rank ≥ 2 with rows of `L` elements, as
    /// [`View::gather_rows`] reads them; the elements added in the same order.
    #[inline(always)]
    fn scatter_rows<const L: usize, T: Copy + std::ops::AddAssign, D: Write<T> + ?Sized>(
        &self,
        vals: &[T],
        start: usize,
        dst: &mut D,
    ) {
        let (inner, cols, offs) = self.row_pattern::<L>();
        let (head, tail, planes) = self.planes(start, vals.len(), L);
        self.scatter_runs(&vals[..head], start, dst);
        for Plane {
            k,
            i0,
            rows,
            base,
            valid: _,
        } in planes.filter(|p| p.valid)
        {
            let block = vals[k..k + rows * L].chunks_exact(L);
            for (i, row) in (i0..i0 + rows).zip(block) {
                if i < inner.lo || i >= inner.hi {
                    continue;
                }
                let b = base + (i * inner.stride) as i64;
                for j in 0..L {
                    if cols[j] {
                        dst.add_at((b + offs[j]) as usize, row[j]);
                    }
                }
            }
        }
        self.scatter_runs(&vals[tail..], start + tail, dst);
    }

    /// [`View::scatter_add`] a run along the last axis at a time.
    #[inline(always)]
    fn scatter_runs<T: Copy + std::ops::AddAssign, D: Write<T> + ?Sized>(
        &self,
        vals: &[T],
        start: usize,
        dst: &mut D,
    ) {
        let last = self.last_axis();
        for Run {
            k,
            base,
            j0,
            len: run,
            valid,
        } in self.runs(start, vals.len())
        {
            if !valid {
                continue;
            }
            // Only the run's valid part is added (padding positions are dropped).
            let (a, b) = Self::valid_part(&last, j0, run);
            if b == a {
                continue;
            }
            let src = &vals[k + a..k + b];
            let p0 = (base + (j0 + a) as i64 * last.stride as i64) as usize;
            match last.stride {
                0 => {
                    for &v in src {
                        dst.add_at(p0, v);
                    }
                }
                // Contiguous: one bounds check and a vectorised loop (a bias gradient sums
                // every row of the batch into one row this way).
                1 => dst.add_run(p0, src),
                s => {
                    for (t, &v) in src.iter().enumerate() {
                        dst.add_at(p0 + t * s, v);
                    }
                }
            }
        }
    }

    /// Build the concrete view of a luminal tracker, resolving dynamic dimensions.
    pub fn from_tracker(st: &ShapeTracker, dyn_map: &FxHashMap<char, usize>) -> Result<View> {
        let n = st.dims.len();
        if n > 8 {
            return Err(Error::Engine(format!(
                "{n}-D views are not supported (max 8)"
            )));
        }
        let eval = |e: &luminal::prelude::symbolic::Expression| -> Result<i64> {
            e.exec(dyn_map).map(|v| v as i32 as i64).ok_or_else(|| {
                Error::Engine(format!(
                    "unresolved dynamic dimension in {e:?} (set it before running)"
                ))
            })
        };
        let dims: Vec<i64> = st.dims.iter().map(eval).collect::<Result<_>>()?;
        let mut pstride = vec![0i64; n];
        let mut acc = 1i64;
        for i in (0..n).rev() {
            pstride[i] = acc;
            if !st.fake[i] {
                acc *= dims[i];
            }
        }
        let mut offset = 0i64;
        let mut axes = Vec::with_capacity(n);
        for a in 0..n {
            let i = st.indexes[a];
            let dim = dims[i];
            let (p0, p1) = (eval(&st.padding[i].0)?, eval(&st.padding[i].1)?);
            let (s0, s1) = (eval(&st.slices[i].0)?, eval(&st.slices[i].1)?);
            let len = ((dim + p0 + p1).min(s1) - s0).max(0);
            let start = s0 - p0;
            let (stride, lo, hi) = if st.fake[i] {
                (0, 0, len)
            } else {
                let lo = (-start).clamp(0, len);
                let hi = (dim - start).clamp(lo, len);
                offset += start * pstride[i];
                (pstride[i], lo, hi)
            };
            axes.push(Axis {
                len: len as usize,
                stride: stride as usize,
                lo: lo as usize,
                hi: hi as usize,
            });
        }
        Ok(View { offset, axes })
    }
}

/// One run of [`View::runs`]: logical elements `[k, k + len)` of the visited range lie along
/// the last axis from index `j0` of the row whose last-axis index 0 is at buffer position
/// `base`; `valid` is false where an outer axis is padding.
struct Run {
    k: usize,
    base: i64,
    j0: usize,
    len: usize,
    valid: bool,
}

/// The runs of a range of a view's logical elements, outer axes carried incrementally.
struct Runs<'v> {
    view: &'v View,
    idx: [usize; 8],
    base: i64,
    valid: bool,
    k: usize,
    n: usize,
    last_len: usize,
    masked: bool,
}

impl Runs<'_> {
    #[inline(always)]
    fn outer_valid(&self) -> bool {
        let axes = &self.view.axes;
        (0..axes.len() - 1).all(|a| self.idx[a] >= axes[a].lo && self.idx[a] < axes[a].hi)
    }
}

impl Iterator for Runs<'_> {
    type Item = Run;

    #[inline(always)]
    fn next(&mut self) -> Option<Run> {
        if self.k >= self.n {
            return None;
        }
        let axes = &self.view.axes;
        let r = axes.len();
        if r == 0 {
            self.k += 1;
            return Some(Run {
                k: self.k - 1,
                base: self.base,
                j0: 0,
                len: 1,
                valid: true,
            });
        }
        let j0 = self.idx[r - 1];
        let len = (self.last_len - j0).min(self.n - self.k);
        let run = Run {
            k: self.k,
            base: self.base,
            j0,
            len,
            valid: self.valid,
        };
        self.k += len;
        self.idx[r - 1] += len;
        if self.idx[r - 1] >= self.last_len {
            // Carry into the outer axes, updating the base position incrementally.
            self.idx[r - 1] = 0;
            let mut a = r - 1;
            while a > 0 {
                a -= 1;
                self.idx[a] += 1;
                self.base += axes[a].stride as i64;
                if self.idx[a] < axes[a].len {
                    break;
                }
                self.base -= (axes[a].len * axes[a].stride) as i64;
                self.idx[a] = 0;
            }
            if self.masked {
                self.valid = self.outer_valid();
            }
        }
        Some(run)
    }
}

/// One plane of whole rows ([`View::planes`]).
struct Plane {
    k: usize,
    i0: usize,
    rows: usize,
    base: i64,
    valid: bool,
}

/// The planes of whole rows of a range of a view's logical elements.
struct Planes<'v> {
    view: &'v View,
    row: usize,
    end: usize,
    k: usize,
    l: usize,
}

impl Iterator for Planes<'_> {
    type Item = Plane;

    #[inline(always)]
    fn next(&mut self) -> Option<Plane> {
        if self.row >= self.end {
            return None;
        }
        let axes = &self.view.axes;
        let r = axes.len();
        let inner = axes[r - 2].len;
        let (mut plane, i0) = (self.row / inner, self.row % inner);
        let (mut base, mut valid) = (self.view.offset, true);
        for ax in axes[..r - 2].iter().rev() {
            let i = plane % ax.len;
            plane /= ax.len;
            base += (i * ax.stride) as i64;
            valid &= i >= ax.lo && i < ax.hi;
        }
        let rows = (inner - i0).min(self.end - self.row);
        let k = self.k;
        self.row += rows;
        self.k += rows * self.l;
        Some(Plane {
            k,
            i0,
            rows,
            base,
            valid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scatter may sum rows first only where one row's elements land on distinct positions.
    #[test]
    fn a_row_sum_needs_rows_broadcast_onto_distinct_positions() {
        let ax = |len, stride| Axis {
            len,
            stride,
            lo: 0,
            hi: len,
        };
        let v = |axes: Vec<Axis>| View { offset: 0, axes };
        // A bias's gradient, and a weight gradient transposed (23 × 72 onto stride 1 and 23).
        assert_eq!(v(vec![ax(100, 0), ax(8, 1)]).row_sum(), Some(8));
        assert_eq!(
            v(vec![ax(4, 0), ax(23, 1), ax(72, 23)]).row_sum(),
            Some(23 * 72)
        );
        // Rows not broadcast; an axis of the row broadcast; overlapping axes; padding.
        assert_eq!(v(vec![ax(4, 8), ax(8, 1)]).row_sum(), None);
        assert_eq!(v(vec![ax(4, 0), ax(3, 0), ax(8, 1)]).row_sum(), None);
        assert_eq!(v(vec![ax(4, 0), ax(3, 4), ax(8, 1)]).row_sum(), None);
        let mut padded = v(vec![ax(4, 0), ax(8, 1)]);
        padded.axes[1].hi = 7;
        assert_eq!(padded.row_sum(), None);
    }

    #[test]
    fn contiguous_is_identity_and_simplifies_to_one_axis() {
        let v = View::contiguous(&[3, 4, 5]);
        assert!(v.is_identity(60));
        assert_eq!(v.simplified().axes.len(), 1);
        let t = v.permute(&[1, 0, 2]);
        assert!(!t.is_identity(60));
    }

    #[test]
    fn gather_reads_transposed_and_padded() {
        let src: Vec<f32> = (0..6).map(|i| i as f32).collect();
        // 2x3 transposed to 3x2
        let v = View::contiguous(&[2, 3]).permute(&[1, 0]);
        let mut out = vec![0.0; 6];
        v.gather(src.as_slice(), 0, &mut out);
        assert_eq!(out, vec![0., 3., 1., 4., 2., 5.]);
        // pad one zero on both sides of a 1-D view
        let p = View {
            offset: -1,
            axes: vec![Axis {
                len: 8,
                stride: 1,
                lo: 1,
                hi: 7,
            }],
        };
        let mut out = vec![9.0; 8];
        p.gather(src.as_slice(), 0, &mut out);
        assert_eq!(out, vec![0., 0., 1., 2., 3., 4., 5., 0.]);
        // partial chunk starting mid-row
        let mut out = vec![0.0; 3];
        v.gather(src.as_slice(), 3, &mut out);
        assert_eq!(out, vec![4., 2., 5.]);
    }

    /// Rows of a few elements, read and written a plane of whole rows at a time (partial rows
    /// at either end by runs), agree with the view's definition element by element, and the
    /// adjoint adds each position's terms in logical order.
    #[test]
    fn short_rows_gather_and_scatter_like_single_elements() {
        let ax = |len, stride, lo, hi| Axis {
            len,
            stride,
            lo,
            hi,
        };
        let src: Vec<f64> = (0..400).map(|i| i as f64 + 0.5).collect();
        for l in 1..=5 {
            for (lo, hi) in [(0, l), (0, l - 1), (l - 1, l), (1.min(l - 1), l)] {
                // Channels [lo, hi) of rows of l, in planes of 5 rows (the middle three valid,
                // as a padded axis reads), under a broadcast axis (three planes adding into
                // the same positions) or not; ranks 2 to 4; an offset below zero, as a
                // concatenation's second part reads.
                let rows = ax(5, l + 1, 1, 4);
                let last = ax(l, 1, lo, hi);
                let views = [
                    View {
                        offset: 3,
                        axes: vec![ax(6, 40, 0, 6), rows, last],
                    },
                    View {
                        offset: 50 - lo as i64,
                        axes: vec![ax(4, 0, 1, 4), ax(4, 60, 0, 4), rows, last],
                    },
                    View {
                        offset: 7,
                        axes: vec![ax(9, l, 2, 9), last],
                    },
                ];
                for v in &views {
                    let numel = v.numel();
                    // The last: a partial row first where the broadcast axis adds again.
                    let late = (21 * l + 1).min(numel - 1);
                    let cases = [
                        (0, numel),
                        (1, numel - 3),
                        (2 * l + 1, 4 * l + 1),
                        (7, 2),
                        (late, numel - late),
                    ];
                    for (start, len) in cases {
                        let mut out = vec![-1.0; len];
                        v.gather(src.as_slice(), start, &mut out);
                        // Added in logical order: the broadcast axis adds several values
                        // into one position, in an order the rounding shows.
                        let vals: Vec<f64> =
                            (0..len).map(|t| (t as f64 + 0.5).sin() * 1e3).collect();
                        let mut dst = vec![0.0; 400];
                        v.scatter_add(&vals, start, dst.as_mut_slice());
                        let mut want = vec![0.0; 400];
                        for (t, o) in out.iter().enumerate() {
                            let mut rem = start + t;
                            let mut j = vec![0; v.axes.len()];
                            for (ji, a) in j.iter_mut().zip(&v.axes).rev() {
                                *ji = rem % a.len;
                                rem /= a.len;
                            }
                            let p = v.position(&j);
                            assert_eq!(
                                *o,
                                p.map_or(0.0, |p| src[p]),
                                "{v:?} element {}",
                                start + t
                            );
                            if let Some(p) = p {
                                want[p] += vals[t];
                            }
                        }
                        assert_eq!(dst, want, "{v:?} from {start}");
                    }
                }
            }
        }
    }

    /// The padded last axis read and written run by run (a valid range inside, before and
    /// after each run, chunks starting mid-row) agrees with element-by-element index math.
    #[test]
    fn masked_runs_gather_and_scatter_like_single_elements() {
        for (stride, lo, hi) in [(1usize, 2usize, 5usize), (1, 0, 3), (2, 1, 6), (0, 3, 4)] {
            // 4 rows of a last axis of 6 with valid [lo, hi), as a coupling split pads it.
            let v = View {
                offset: 10,
                axes: vec![
                    Axis {
                        len: 4,
                        stride: 12,
                        lo: 0,
                        hi: 4,
                    },
                    Axis {
                        len: 6,
                        stride,
                        lo,
                        hi,
                    },
                ],
            };
            let pos = |e: usize| -> Option<usize> {
                let (r, j) = (e / 6, e % 6);
                (j >= lo && j < hi).then(|| (10 + 12 * r as i64 + (j * stride) as i64) as usize)
            };
            let src: Vec<f64> = (0..80).map(|i| i as f64 * 0.5 + 1.0).collect();
            let vals: Vec<f64> = (0..24).map(|i| (i * i) as f64).collect();
            for (start, len) in [(0, 24), (3, 7), (5, 1), (11, 13)] {
                let mut out = vec![-1.0; len];
                v.gather(src.as_slice(), start, &mut out);
                let mut dst = vec![0.0; 80];
                v.scatter_add(&vals[start..start + len], start, dst.as_mut_slice());
                let mut want = vec![0.0; 80];
                for (t, o) in out.iter().enumerate() {
                    let e = start + t;
                    assert_eq!(*o, pos(e).map_or(0.0, |p| src[p]), "{stride} {lo} {hi} {e}");
                    if let Some(p) = pos(e) {
                        want[p] += vals[e];
                    }
                }
                assert_eq!(dst, want, "stride {stride}, valid {lo}..{hi}, from {start}");
            }
        }
    }
}

//! Element access to the buffers of a run that several workers use at once.
//!
//! While a plan runs on several workers, one worker may read a buffer while another writes
//! *other* elements of it (the rows of another tile), and several workers scatter into
//! disjoint positions of one output. A `&[T]` or `&mut [T]` over the whole buffer would then
//! overlap another thread's `&mut`, which Rust's aliasing rules forbid even when the elements
//! actually touched never overlap. [`Shared`] therefore holds a buffer as a raw pointer and
//! makes references only to the elements an access touches: [`Read::run`] a slice of exactly
//! the elements read, [`Read::at`] and [`Write::add_at`] one element.
//!
//! The disjointness invariant (upheld by the scheduler, [`super::tile`], and relied on by every
//! `unsafe` block here): while steps run concurrently, no element is written by one worker
//! while another reads or writes it. Every access is bounds-checked.

use std::marker::PhantomData;
use std::ops::AddAssign;

/// `dst = src` for the short runs of a gather (a few to a few dozen elements): blocks of 8, 4
/// or 2 elements of fixed size, the last block overlapping the one before, which compile to
/// vector moves, where `copy_from_slice` of a run's length calls `memcpy` (copied an element at
/// a time, the im2col of the gauge flow's convolutions was a quarter of its sampling time).
#[inline(always)]
pub fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    match n {
        0 => {}
        1 => dst[0] = src[0],
        2..4 => copy_blocks::<T, 2>(dst, src),
        4..8 => copy_blocks::<T, 4>(dst, src),
        _ => copy_blocks::<T, 8>(dst, src),
    }
}

/// `dst = src` (equal lengths n ≥ B) in blocks of B.
#[inline(always)]
fn copy_blocks<T: Copy, const B: usize>(dst: &mut [T], src: &[T]) {
    let n = dst.len();
    let mut i = 0;
    loop {
        let at = if i + B < n { i } else { n - B };
        if let (Ok(d), Ok(s)) = (
            <&mut [T; B]>::try_from(&mut dst[at..at + B]),
            <&[T; B]>::try_from(&src[at..at + B]),
        ) {
            *d = *s;
        }
        if at == n - B {
            return;
        }
        i += B;
    }
}

/// `dst.fill(v)` for short runs, in blocks of fixed size as [`copy_short`] (a fill of a runtime
/// length calls `memset`).
#[inline(always)]
pub fn fill_short<T: Copy>(dst: &mut [T], v: T) {
    match dst.len() {
        0 => {}
        1 => dst[0] = v,
        2..4 => fill_blocks::<T, 2>(dst, v),
        4..8 => fill_blocks::<T, 4>(dst, v),
        _ => fill_blocks::<T, 8>(dst, v),
    }
}

/// `dst.fill(v)` (length n ≥ B) in blocks of B.
#[inline(always)]
fn fill_blocks<T: Copy, const B: usize>(dst: &mut [T], v: T) {
    let n = dst.len();
    let mut i = 0;
    loop {
        let at = if i + B < n { i } else { n - B };
        if let Ok(d) = <&mut [T; B]>::try_from(&mut dst[at..at + B]) {
            *d = [v; B];
        }
        if at == n - B {
            return;
        }
        i += B;
    }
}

/// Reading elements of a buffer: a plain slice, or a [`Shared`] buffer.
pub trait Read<T: Copy> {
    /// Number of elements.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element `i` (panics out of bounds, like indexing).
    fn at(&self, i: usize) -> T;
    /// Elements `[lo, hi)`, or None out of bounds.
    fn get_run(&self, lo: usize, hi: usize) -> Option<&[T]>;
    /// The first element's address, for kernels that prove their bounds once and then read
    /// through it (only the elements they read, under the module's invariant).
    fn base_ptr(&self) -> *const T;
    /// Elements `[lo, hi)` (panics out of bounds, like indexing).
    fn run(&self, lo: usize, hi: usize) -> &[T] {
        match self.get_run(lo, hi) {
            Some(s) => s,
            None => panic!("run {lo}..{hi} of a buffer of {}", self.len()),
        }
    }
}

/// Adding into elements of a buffer: a plain slice, or a [`Shared`] buffer.
pub trait Write<T: Copy + AddAssign> {
    /// Number of elements.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `self[i] += v` (panics out of bounds, like indexing).
    fn add_at(&mut self, i: usize, v: T);
    /// `self[lo + t] += vals[t]` for every t: one bounds check, a loop the compiler vectorises
    /// (panics out of bounds, like indexing).
    fn add_run(&mut self, lo: usize, vals: &[T]);
}

impl<T: Copy> Read<T> for [T] {
    #[inline]
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    #[inline]
    fn at(&self, i: usize) -> T {
        self[i]
    }
    #[inline]
    fn base_ptr(&self) -> *const T {
        self.as_ptr()
    }
    #[inline]
    fn get_run(&self, lo: usize, hi: usize) -> Option<&[T]> {
        self.get(lo..hi)
    }
}

impl<T: Copy + AddAssign> Write<T> for [T] {
    #[inline]
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    #[inline]
    fn add_at(&mut self, i: usize, v: T) {
        self[i] += v;
    }
    #[inline]
    fn add_run(&mut self, lo: usize, vals: &[T]) {
        for (d, &v) in self[lo..lo + vals.len()].iter_mut().zip(vals) {
            *d += v;
        }
    }
}

/// A buffer that several workers use at once (see the module docs): a raw pointer to a live
/// allocation of `len` elements that outlives `'a`.
#[derive(Clone, Copy, Debug)]
pub struct Shared<'a, T> {
    ptr: *mut T,
    len: usize,
    _buffer: PhantomData<&'a [T]>,
}

// SAFETY: a Shared is only dereferenced under the disjointness invariant of the module docs.
unsafe impl<T: Send> Send for Shared<'_, T> {}
unsafe impl<T: Sync> Sync for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    /// # Safety
    /// `ptr` points to a live allocation of `len` elements for the lifetime `'a`, accessed only
    /// under the disjointness invariant of the module docs.
    pub(super) unsafe fn new(ptr: *mut T, len: usize) -> Self {
        Shared {
            ptr,
            len,
            _buffer: PhantomData,
        }
    }

    /// The first element's address (for kernels that take raw pointers).
    pub fn as_ptr(&self) -> *const T {
        self.ptr
    }

    /// Elements `[lo, hi)` for as long as the buffer lives, or None out of bounds. The slice
    /// covers exactly the elements read: no worker may write them while it lives.
    #[inline]
    pub fn slice(self, lo: usize, hi: usize) -> Option<&'a [T]> {
        if lo > hi || hi > self.len {
            return None;
        }
        // SAFETY: in bounds of an allocation live for 'a; no worker writes elements lo..hi
        // while this slice lives (invariant: it covers exactly the elements read).
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(lo), hi - lo) })
    }
}

impl<T: Copy> Read<T> for Shared<'_, T> {
    #[inline]
    fn len(&self) -> usize {
        self.len
    }
    #[inline]
    fn at(&self, i: usize) -> T {
        assert!(i < self.len, "element {i} of a buffer of {}", self.len);
        // SAFETY: in bounds of a live allocation; no worker writes element i now (invariant).
        unsafe { self.ptr.add(i).read() }
    }
    #[inline]
    fn base_ptr(&self) -> *const T {
        self.ptr
    }
    #[inline]
    fn get_run(&self, lo: usize, hi: usize) -> Option<&[T]> {
        self.slice(lo, hi)
    }
}

impl<T: Copy + AddAssign> Write<T> for Shared<'_, T> {
    #[inline]
    fn len(&self) -> usize {
        self.len
    }
    #[inline]
    fn add_at(&mut self, i: usize, v: T) {
        assert!(i < self.len, "element {i} of a buffer of {}", self.len);
        // SAFETY: in bounds of a live allocation; no other worker reads or writes element i now
        // (invariant: a scatter's workers own disjoint positions).
        unsafe { *self.ptr.add(i) += v }
    }
    #[inline]
    fn add_run(&mut self, lo: usize, vals: &[T]) {
        let hi = lo + vals.len();
        assert!(hi <= self.len, "run {lo}..{hi} of a buffer of {}", self.len);
        // SAFETY: in bounds of a live allocation; the slice covers exactly the elements this
        // worker adds into, which no other worker reads or writes now (invariant).
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(lo), vals.len()) };
        for (d, &v) in dst.iter_mut().zip(vals) {
            *d += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length from 0 to 40 (each block width, the overlapping last block): exactly the
    /// run written, nothing beside it.
    #[test]
    fn short_copies_and_fills_write_exactly_their_run() {
        for n in 0..40 {
            let src: Vec<u32> = (100..100 + n as u32).collect();
            let mut dst = vec![7u32; n + 2];
            copy_short(&mut dst[1..n + 1], &src);
            assert_eq!(&dst[1..n + 1], &src[..], "copy {n}");
            assert_eq!((dst[0], dst[n + 1]), (7, 7), "copy {n}: beside the run");
            fill_short(&mut dst[1..n + 1], 3);
            assert!(dst[1..n + 1].iter().all(|&v| v == 3), "fill {n}");
            assert_eq!((dst[0], dst[n + 1]), (7, 7), "fill {n}: beside the run");
        }
    }

    #[test]
    fn shared_reads_and_adds_like_a_slice() {
        let mut v = vec![1.0f64, 2.0, 3.0, 4.0];
        let plain = v.clone();
        // SAFETY: v outlives s and nothing else touches it.
        let mut s = unsafe { Shared::new(v.as_mut_ptr(), v.len()) };
        assert_eq!(Read::len(&s), 4);
        assert_eq!(s.at(2), plain.at(2));
        assert_eq!(s.run(1, 3), plain.run(1, 3));
        assert!(s.get_run(3, 5).is_none() && plain.get_run(3, 5).is_none());
        assert!(s.get_run(2, 1).is_none());
        s.add_at(0, 5.0);
        s.add_run(2, &[1.0, 2.0]);
        assert_eq!(v, [6.0, 2.0, 4.0, 6.0]);
        let mut p = plain.clone();
        p.add_run(1, &[1.0]);
        assert_eq!(p, [1.0, 3.0, 3.0, 4.0]);
    }

    #[test]
    #[should_panic]
    fn shared_runs_are_bounds_checked() {
        let mut v = vec![1.0f32; 3];
        // SAFETY: v outlives s and nothing else touches it.
        let mut s = unsafe { Shared::new(v.as_mut_ptr(), v.len()) };
        s.add_run(2, &[1.0, 1.0]);
    }

    #[test]
    #[should_panic]
    fn shared_reads_are_bounds_checked() {
        let mut v = vec![1.0f32; 3];
        // SAFETY: v outlives s and nothing else touches it.
        let s = unsafe { Shared::new(v.as_mut_ptr(), v.len()) };
        s.at(3);
    }
}

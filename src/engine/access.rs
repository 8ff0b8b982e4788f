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

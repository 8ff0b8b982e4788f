//! The one seeded random-number generator of the library.
//!
//! Every seeded stream (flow initialisation, training batches, samplers, estimates) is a
//! ChaCha8 stream from `rand_chacha`, whose output for a given seed is fixed by its algorithm
//! and does not change across `rand` versions or platforms (rand's `StdRng` makes no such
//! promise). With a step budget instead of a time budget, the same `--seed` therefore gives
//! the same run on any machine, up to the floating-point order of threaded reductions.

use rand::SeedableRng;

/// The library's seeded generator.
pub type SeededRng = rand_chacha::ChaCha8Rng;

/// A generator seeded with `seed`.
pub fn seeded(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

//! The one seeded random-number generator of the library, and how a run splits its seed.
//!
//! Every seeded stream (flow initialisation, training batches, samplers, estimates) is a
//! ChaCha8 stream from `rand_chacha`, whose output for a given seed is fixed by its algorithm
//! and does not change across `rand` versions or platforms (rand's `StdRng` makes no such
//! promise). With a step budget instead of a time budget, the same `--seed` therefore gives
//! the same run on any machine, up to the floating-point order of threaded reductions.
//!
//! **One seed, many streams.** A run draws for several purposes (training batches, the
//! estimates at each temperature and round, the witness, a repair's retraining, ...). Each
//! purpose gets its own seed from [`fn@derive`]:
//!
//! ```text
//! derive(seed, purpose, index) = the index-th 64-bit word of ChaCha8 keyed by seed,
//!                                on stream FNV-1a(purpose)
//! ```
//!
//! a pseudo-random function of all three, so no two purposes of one run share numbers, and no
//! purpose of one run shares numbers with any purpose of another seed's run. Sub-seeds made by
//! arithmetic (`seed + 1`, `seed ^ 0x51`) did not have the second property: run s's estimates
//! drew the same numbers as run s + 1's training, which correlates runs that a user compares
//! across consecutive seeds to see the spread.

use rand::{RngCore, SeedableRng};

/// The library's seeded generator.
pub type SeededRng = rand_chacha::ChaCha8Rng;

/// A generator seeded with `seed`.
pub fn seeded(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

/// The seed of item `index` of `purpose` within the run seeded by `seed` (see the module
/// docs); `purpose` names what draws from it ("sweep/witness", "flow/layer", ...).
pub fn derive(seed: u64, purpose: &str, index: u64) -> u64 {
    let mut rng = seeded(seed);
    rng.set_stream(fnv1a(purpose));
    rng.set_word_pos(u128::from(index) << 1);
    rng.next_u64()
}

/// A generator for item `index` of `purpose` within the run seeded by `seed`:
/// `seeded(derive(seed, purpose, index))`.
pub fn stream(seed: u64, purpose: &str, index: u64) -> SeededRng {
    seeded(derive(seed, purpose, index))
}

/// 64-bit FNV-1a of the purpose's bytes: fixed by its definition, unlike std's hashers.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_are_fixed_and_distinct_across_seeds_purposes_and_indices() {
        // Fixed: the documented reproducibility rests on this value never changing.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(derive(7, "x", 3), derive(7, "x", 3));
        let mut all = std::collections::HashSet::new();
        for seed in 0..20 {
            for purpose in ["train", "estimate", "witness"] {
                for index in 0..20 {
                    assert!(all.insert(derive(seed, purpose, index)));
                }
            }
        }
        // Consecutive seeds' streams are unrelated: a first draw of seed s never equals any
        // of seed s + 1's first draws (arithmetic sub-seeds made these coincide).
        let first = |s: u64, p: &str| stream(s, p, 0).next_u64();
        assert_ne!(first(1, "estimate"), first(2, "train"));
        assert_ne!(first(1, "estimate"), first(1, "train"));
    }
}

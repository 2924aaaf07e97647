//! The one stable hash of the harness: every id, seed and fingerprint written to disk comes from
//! here. std's hashers promise stability across neither Rust versions nor platforms, so a cell id,
//! a sample's random stream or a cache key computed with them could change under a toolchain
//! update; these are fixed functions of the bytes.
//!
//! - [`fnv1a_64`] (alias [`stable_hash`]): fingerprints, cache keys, sample seeds.
//! - [`fnv1a_128`]: cell ids (`spec::Cell::cell_id`), where 64 bits would make collisions between
//!   the cells of all experiments a user ever runs merely unlikely.
//! - [`splitmix64`]: SplitMix64's finaliser. FNV-1a leaves ids that share a long prefix
//!   (`wikitext2:valid-17`, `wikitext2:valid-18`) close in their top bits; a seeded order or a
//!   subsample sorts by `splitmix64(fnv1a_64(..))` so such ids spread out.
//! - [`SplitMix64`]: the generator of the same name, for fixtures that must be the same everywhere.
//!
//! Changing any of these changes cell ids and samples of every experiment: the tests below pin
//! their values.

const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV128_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const FNV128_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
/// 2⁶⁴ / φ: SplitMix64's increment.
pub const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// FNV-1a, 64 bit, of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    fnv1a_64_from(FNV64_OFFSET, bytes)
}

/// FNV-1a, 64 bit, continued from state `h` (the offset basis starts it).
pub fn fnv1a_64_from(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV64_PRIME))
}

/// FNV-1a, 64 bit: the name most callers use.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    fnv1a_64(bytes)
}

/// FNV-1a, 128 bit.
pub fn fnv1a_128(bytes: &[u8]) -> u128 {
    bytes.iter().fold(FNV128_OFFSET, |h, &b| {
        (h ^ u128::from(b)).wrapping_mul(FNV128_PRIME)
    })
}

/// SplitMix64's output finaliser: a bijection on u64 that spreads nearby inputs apart.
pub fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit key of `id` under `seed` that depends on nothing else: FNV-1a over the id's bytes
/// started from the offset basis mixed with the seed, then [`splitmix64`] of it plus the gamma.
/// Seeded subsampling (`data::sample`) sorts by it.
pub fn seeded_key(seed: u64, id: &str) -> u64 {
    let h = fnv1a_64_from(
        FNV64_OFFSET ^ seed.wrapping_mul(GOLDEN_GAMMA),
        id.as_bytes(),
    );
    splitmix64(h.wrapping_add(GOLDEN_GAMMA))
}

/// The SplitMix64 generator: deterministic on every machine, for fixtures and test data.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        splitmix64(self.0)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_64_reference_values() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fnv1a_128_reference_values() {
        assert_eq!(fnv1a_128(b""), FNV128_OFFSET);
        assert_eq!(
            fnv1a_128(b"a"),
            0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964_u128
        );
    }

    #[test]
    fn splitmix64_reference_values() {
        // The first outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
        let mut g = SplitMix64(0);
        assert_eq!(g.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(g.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn seeded_key_depends_on_seed_and_id() {
        assert_ne!(seeded_key(0, "a"), seeded_key(1, "a"));
        assert_ne!(seeded_key(0, "a"), seeded_key(0, "b"));
        assert_eq!(seeded_key(7, "x"), seeded_key(7, "x"));
    }
}

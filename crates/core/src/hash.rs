//! Keyed hashing: the core's hash maps and its TCP initial sequence numbers.
//!
//! Both are SipHash under a key that comes in from outside, like every other input of the core
//! (the seed given to [`Surrogate::new`](crate::Surrogate::new)). For one key the core is
//! deterministic: the same frames at the same times give the same answers, in the same order,
//! whatever the run. Without the key a peer can neither guess a sequence number nor choose
//! flows that pile into one bucket of a map. `RandomState`, `DefaultHasher` and the clock are
//! refused in this crate by its `clippy.toml`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use siphasher::sip::{SipHasher13, SipHasher24};

/// A SipHash key, derived from a seed; builds the hasher of the core's maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keyed {
    k0: u64,
    k1: u64,
}

/// A hash map under a [`Keyed`] hasher.
pub(crate) type Map<K, V> = HashMap<K, V, Keyed>;

impl Keyed {
    /// The key of the core's maps for `seed`.
    pub(crate) fn maps(seed: u64) -> Self {
        Keyed {
            k0: spread(seed),
            k1: spread(seed ^ 0x6d61_7073_6d61_7073),
        }
    }

    /// The key of the TCP initial sequence numbers for `seed`: another key than the maps',
    /// so that neither tells anything about the other.
    pub(crate) fn isn(seed: u64) -> Self {
        Keyed {
            k0: spread(seed ^ 0x6973_6e69_736e_6973),
            k1: spread(seed.rotate_left(32) ^ 0x6973_6e6b_6579_3032),
        }
    }

    /// An empty map under this key.
    pub(crate) fn map<K, V>(self) -> Map<K, V> {
        HashMap::with_hasher(self)
    }

    /// SipHash-2-4 of `value` under this key (the strength RFC 6528 asks of an ISN's hash).
    pub(crate) fn hash_strong(self, value: &impl Hash) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        value.hash(&mut h);
        h.finish()
    }
}

impl BuildHasher for Keyed {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// SplitMix64's finalizer: every bit of the seed moves every bit of the key.
fn spread(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_hash_and_another_seed_another() {
        let a = Keyed::maps(7).hash_one(("flow", 80u16));
        assert_eq!(a, Keyed::maps(7).hash_one(("flow", 80u16)));
        assert_ne!(a, Keyed::maps(8).hash_one(("flow", 80u16)));
        assert_ne!(Keyed::maps(7), Keyed::isn(7));
        assert_eq!(
            Keyed::isn(7).hash_strong(&1u32),
            Keyed::isn(7).hash_strong(&1u32)
        );
        assert_ne!(
            Keyed::isn(7).hash_strong(&1u32),
            Keyed::isn(7).hash_strong(&2u32)
        );
    }

    #[test]
    fn a_map_under_one_key_iterates_in_one_order() {
        let fill = || {
            let mut m: Map<u32, u32> = Keyed::maps(42).map();
            for i in 0..1000u32 {
                m.insert(i.wrapping_mul(2_654_435_761), i);
            }
            m.into_iter().collect::<Vec<_>>()
        };
        assert_eq!(fill(), fill());
    }
}

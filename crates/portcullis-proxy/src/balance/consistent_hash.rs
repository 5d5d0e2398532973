//! Maglev consistent hashing (Eisenbud et al., NSDI 2016).
//!
//! Each target fills a lookup table of prime size M by its own permutation (from two hashes of
//! its name); a key hashes to a slot. Load is near-even (within a few percent for M ≫ n), and
//! adding a target to n moves about 1/(n+1) of the keys. Implemented here because no maintained
//! crate offers Maglev over arbitrary byte keys; it is about forty lines.

use std::hash::{BuildHasher, Hasher};

/// Table size: a prime well above 100 × targets for the target counts we expect.
const TABLE_SIZE: usize = 65_537;

/// A Maglev lookup table.
#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
}

impl Maglev {
    /// Builds the table for targets with these (unique) names.
    pub fn new(names: &[&str]) -> Self {
        let m = TABLE_SIZE as u64;
        let n = names.len();
        let mut table = vec![u32::MAX; TABLE_SIZE];
        if n == 0 {
            return Self {
                table: table.into(),
            };
        }
        let perms: Vec<(u64, u64)> = names
            .iter()
            .map(|name| {
                let offset = hash_with_seed(name.as_bytes(), 0x6d61_676c) % m;
                let skip = hash_with_seed(name.as_bytes(), 0x6576_6e21) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut filled = 0;
        'fill: loop {
            for i in 0..n {
                let (offset, skip) = perms[i];
                // Each target claims the next free slot of its permutation.
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Self {
            table: table.into(),
        }
    }

    /// The target index for `key`.
    pub fn pick(&self, key: &[u8]) -> usize {
        let slot = (hash_with_seed(key, 0) % TABLE_SIZE as u64) as usize;
        self.table[slot] as usize
    }
}

/// A stable 64-bit hash (SipHash-1-3 with fixed keys): every gateway instance running the same
/// release maps a key to the same target.
fn hash_with_seed(bytes: &[u8], seed: u64) -> u64 {
    let mut h = FixedState.build_hasher();
    h.write_u64(seed);
    h.write(bytes);
    h.finish()
}

#[derive(Clone, Copy)]
struct FixedState;

impl BuildHasher for FixedState {
    type Hasher = std::hash::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::hash::DefaultHasher::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> impl Iterator<Item = String> {
        (0..10_000).map(|i| format!("user-{i}"))
    }

    #[test]
    fn load_is_even_within_2_points() {
        let names = ["a", "b", "c", "d", "e"];
        let m = Maglev::new(&names);
        let mut counts = [0usize; 5];
        for k in keys() {
            counts[m.pick(k.as_bytes())] += 1;
        }
        for c in counts {
            let share = c as f64 / 10_000.0;
            assert!((share - 0.2).abs() <= 0.02, "{counts:?}");
        }
    }

    #[test]
    fn adding_a_target_moves_about_one_in_n_plus_one_keys() {
        let before = Maglev::new(&["a", "b", "c", "d"]);
        let after = Maglev::new(&["a", "b", "c", "d", "e"]);
        let moved = keys()
            .filter(|k| before.pick(k.as_bytes()) != after.pick(k.as_bytes()))
            .count();
        let share = moved as f64 / 10_000.0;
        // Ideal is 1/5 = 20%; Maglev adds a little churn between old targets.
        assert!(share < 0.25, "moved {share}");
        assert!(share > 0.15, "moved {share}");
    }

    #[test]
    fn keys_that_move_go_to_the_new_target_mostly() {
        let before = Maglev::new(&["a", "b", "c"]);
        let after = Maglev::new(&["a", "b", "c", "d"]);
        let (mut to_new, mut moved) = (0, 0);
        for k in keys() {
            let (x, y) = (before.pick(k.as_bytes()), after.pick(k.as_bytes()));
            if x != y {
                moved += 1;
                to_new += usize::from(y == 3);
            }
        }
        assert!(to_new as f64 / moved as f64 > 0.9, "{to_new}/{moved}");
    }
}

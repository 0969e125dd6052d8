//! Which tenants this process owns when several exporters share one tenant list
//! (`--shard.index` of `--shard.count`, e.g. the pods of a StatefulSet).
//!
//! A tenant belongs to the shard that Lamping and Veach's jump consistent hash picks for the
//! FNV-1a 64-bit hash of its name. Both are tiny, fixed algorithms (no seed, no library version
//! that could change them), so every replica computes the same owner for the same name; the jump
//! hash moves only the tenants that must move when the count changes: from `n` to `n + 1` shards,
//! about `1 / (n + 1)` of the tenants, all of them to the new shard. Ownership is decided once,
//! when the configuration is read, so nothing downstream ever sees a tenant it does not own.

/// This process's place among the shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based index of this process.
    pub index: u32,
    /// How many processes share the tenants.
    pub count: u32,
}

impl Default for Shard {
    /// One process owns everything.
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// A shard, if `index` is one of `count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 {
            return Err("--shard.count must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "--shard.index {index} must be below --shard.count {count} (indexes are 0-based)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether this process owns the tenant named `name`.
    pub fn owns(&self, name: &str) -> bool {
        self.count == 1 || owner(name, self.count) == self.index
    }
}

/// The shard, of `count`, that owns the tenant named `name`.
pub fn owner(name: &str, count: u32) -> u32 {
    jump_hash(fnv1a(name.as_bytes()), count)
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Jump consistent hash (Lamping and Veach, 2014): a bucket in `0..buckets` for `key`.
fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        (0..1000).map(|i| format!("tenant-{i:04}")).collect()
    }

    #[test]
    fn shards_are_disjoint_and_cover_every_tenant_for_counts_1_to_7() {
        for count in 1..=7 {
            let shards: Vec<Shard> = (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
            for name in names() {
                let owners = shards.iter().filter(|s| s.owns(&name)).count();
                assert_eq!(owners, 1, "{name} with {count} shards");
            }
            // Balanced within reason: each shard gets 1/count of 1,000 tenants, give or take.
            for shard in &shards {
                let owned = names().iter().filter(|n| shard.owns(n)).count();
                let fair = 1000 / count as usize;
                assert!(
                    owned > fair * 7 / 10 && owned < fair * 13 / 10,
                    "{shard:?}: {owned}"
                );
            }
        }
    }

    #[test]
    fn growing_the_count_moves_only_about_one_in_count_tenants_and_only_to_the_new_shard() {
        for count in 1..=6u32 {
            let mut moved = 0;
            for name in names() {
                let (before, after) = (owner(&name, count), owner(&name, count + 1));
                if before != after {
                    assert_eq!(after, count, "{name} moved between old shards");
                    moved += 1;
                }
            }
            let expected = 1000 / (count + 1) as usize;
            assert!(
                moved > expected * 7 / 10 && moved < expected * 13 / 10,
                "{count} -> {}: {moved} moved, about {expected} expected",
                count + 1
            );
        }
    }

    #[test]
    fn the_hash_is_stable_and_bad_shards_are_refused() {
        // Fixed values: a change of algorithm would silently reshuffle every deployment.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        // Reference values from an independent implementation of both algorithms.
        assert_eq!(
            (0..10).map(|k| jump_hash(k, 7)).collect::<Vec<_>>(),
            [0, 6, 6, 3, 1, 4, 5, 0, 4, 2]
        );
        assert_eq!(
            (0..10)
                .map(|i| owner(&format!("tenant-{i:04}"), 7))
                .collect::<Vec<_>>(),
            [4, 0, 4, 4, 2, 2, 0, 5, 6, 2]
        );
        assert_eq!(jump_hash(0, 1), 0);
        assert!(Shard::new(0, 0).is_err());
        assert!(Shard::new(3, 3)
            .unwrap_err()
            .contains("below --shard.count 3"));
        assert!(Shard::default().owns("anything"));
    }
}

//! A stable hash for policies that must agree across instances, threads and farmgate processes:
//! consistent hashing, percentage buckets, client-address affinity. The same bytes give the same
//! value everywhere and in every version of this SDK (unlike `std`'s randomly keyed hasher).

/// A 64-bit hash of `data`: FNV-1a over the bytes, then the avalanche step of MurmurHash3
/// (`fmix64`), so that inputs differing in one byte differ in about half of the output bits.
pub fn stable_hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The hash of two parts, as if joined by a separator that cannot occur in either: what
/// rendezvous hashing scores a (key, member) pair with.
pub fn stable_hash2(a: &[u8], b: &[u8]) -> u64 {
    mix(stable_hash(a)
        ^ stable_hash(b)
            .rotate_left(29)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// MurmurHash3's 64-bit finaliser.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Which of `n` equal buckets `data` falls in (`0..n`), e.g. `bucket(id, 100) < 10` for 10 %.
/// Unbiased up to `n` of about 2^32 (multiply-shift rather than modulo).
pub fn bucket(data: &[u8], n: u32) -> u32 {
    (((stable_hash(data) >> 32) * u64::from(n)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        // Fixed values: a change here would break agreement between farmgate versions.
        assert_eq!(stable_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(stable_hash(b"client-1"), 0xf93b_d2c1_6ac6_882d);
        assert_ne!(stable_hash(b"client-1"), stable_hash(b"client-2"));
        assert_ne!(stable_hash2(b"ab", b"c"), stable_hash2(b"a", b"bc"));
        let mut counts = [0u32; 10];
        for i in 0..10_000u32 {
            counts[bucket(format!("user-{i}").as_bytes(), 10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }
}

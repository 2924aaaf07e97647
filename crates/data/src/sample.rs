//! Seeded subsampling by id.
//!
//! Each item gets a pseudo-random key computed from `(seed, id)` alone, and a sample of `n` is the
//! `n` items with the smallest keys. So the chosen set depends only on the seed and the ids present,
//! not on file order, the platform or the Rust version (no `std` hasher, whose output may change),
//! and growing `n` only adds items. The items come back in their input order.

use std::collections::HashMap;

/// 64-bit key of an id under a seed ([`paths::hash::seeded_key`]).
pub(crate) fn key(seed: u64, id: &str) -> u64 {
    paths::hash::seeded_key(seed, id)
}

/// Keeps the `n` items with the smallest keys (ties broken by id), in input order. Returns the
/// kept items and how many were left out.
pub(crate) fn sample<T>(
    items: Vec<T>,
    n: usize,
    seed: u64,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, usize) {
    if items.len() <= n {
        return (items, 0);
    }
    let mut order: Vec<(u64, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, item)| (key(seed, id(item)), i))
        .collect();
    order.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| id(&items[a.1]).cmp(id(&items[b.1])))
    });
    let mut chosen = vec![false; items.len()];
    for &(_, i) in &order[..n] {
        chosen[i] = true;
    }
    let left_out = items.len() - n;
    let kept = items
        .into_iter()
        .zip(chosen)
        .filter_map(|(item, c)| c.then_some(item))
        .collect();
    (kept, left_out)
}

/// Keeps at most `cap` items per group, each group sampled as in [`sample`] (so the choice inside
/// a group depends on the seed and the ids only). Input order is kept.
pub(crate) fn cap_per_group<T>(
    items: Vec<T>,
    cap: usize,
    seed: u64,
    group: impl Fn(&T) -> &str,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, usize) {
    // Rank inside each group by (key, id), then keep the first `cap` of every group.
    let mut by_group: HashMap<&str, Vec<(u64, &str, usize)>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        by_group
            .entry(group(item))
            .or_default()
            .push((key(seed, id(item)), id(item), i));
    }
    let mut chosen = vec![false; items.len()];
    for members in by_group.values_mut() {
        members.sort_unstable();
        for &(_, _, i) in members.iter().take(cap) {
            chosen[i] = true;
        }
    }
    drop(by_group);
    let total = items.len();
    let kept: Vec<T> = items
        .into_iter()
        .zip(chosen)
        .filter_map(|(item, c)| c.then_some(item))
        .collect();
    let left_out = total - kept.len();
    (kept, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_values() {
        // Pinned so that a change of the hash (which would silently change every sample) fails.
        assert_eq!(key(0, "line-1"), key(0, "line-1"));
        assert_ne!(key(0, "line-1"), key(1, "line-1"));
        assert_ne!(key(0, "line-1"), key(0, "line-2"));
        // Computed independently (Python) from the definition in the doc comment.
        assert_eq!(key(42, "abc"), 12_364_272_471_317_447_915);
    }

    #[test]
    fn sample_ignores_input_order_and_grows_monotonically() {
        let ids: Vec<String> = (0..100).map(|i| format!("id-{i}")).collect();
        let (a, out) = sample(ids.clone(), 10, 7, |s| s);
        assert_eq!((a.len(), out), (10, 90));
        let mut reversed = ids.clone();
        reversed.reverse();
        let (mut b, _) = sample(reversed, 10, 7, |s| s);
        b.sort_by_key(|s| s[3..].parse::<usize>().unwrap());
        assert_eq!(a, b);
        let (c, _) = sample(ids.clone(), 20, 7, |s| s);
        assert!(a.iter().all(|x| c.contains(x)));
        let (d, _) = sample(ids, 10, 8, |s| s);
        assert_ne!(a, d);
    }

    #[test]
    fn cap_keeps_at_most_cap_per_group() {
        let items: Vec<(String, String)> = (0..30)
            .map(|i| (format!("g{}", i % 3), format!("id-{i}")))
            .chain((0..2).map(|i| ("small".to_string(), format!("s-{i}"))))
            .collect();
        let (kept, out) = cap_per_group(items, 4, 1, |t| &t.0, |t| &t.1);
        assert_eq!((kept.len(), out), (14, 18));
        for g in ["g0", "g1", "g2"] {
            assert_eq!(kept.iter().filter(|t| t.0 == g).count(), 4);
        }
        assert_eq!(kept.iter().filter(|t| t.0 == "small").count(), 2);
    }
}

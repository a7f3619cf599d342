//! The policies' arithmetic: which member of a fixed list a call goes to.
//!
//! A [`Picker`] is built once per list of members (each time the list changes) and is then
//! shared, immutable but for atomic counters, by every call: picking takes no lock. What may
//! be picked is asked through a predicate, so the same picker serves while members are
//! ejected and come back.

use std::sync::atomic::{AtomicUsize, Ordering};

use xxhash_rust::xxh3::xxh3_64;

use super::Policy;

/// The longest precomputed smooth weighted round-robin sequence; larger weight sums are
/// scaled down to fit (keeping their proportions to within one pick in this many).
const MAX_SEQUENCE: u64 = 1 << 16;

/// The most steps (sequence length × members) spent computing a smooth weighted round-robin
/// sequence, about 10 ms: weight sums are scaled down to stay within it. Past 2048 members of
/// unequal weights even a sequence of one turn each would exceed it, and weighted random
/// picking is used instead.
const MAX_SEQUENCE_WORK: u64 = 1 << 22;

/// The most points on a consistent-hashing ring (16 MiB of them); with many instances, each
/// gets fewer than the asked-for virtual nodes.
const MAX_RING_POINTS: u64 = 1 << 20;

/// A member of the list: its identity on the hash ring, and its weight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member<'a> {
    pub(crate) address: &'a str,
    pub(crate) weight: u32,
}

/// Which member a call goes to, under one policy, over one list of members.
#[derive(Debug)]
pub(crate) enum Picker {
    /// Each member in turn.
    RoundRobin { next: AtomicUsize, len: usize },
    /// nginx's smooth weighted round-robin, its sequence computed ahead: the sequence repeats
    /// with a period of the (reduced) weight sum, so walking it with a counter is the
    /// algorithm itself, without its lock.
    Weighted { sequence: Box<[u32]>, next: AtomicUsize, cumulative: Box<[u64]> },
    /// Weighted random: the running sums of the weights, searched with a random number.
    Random { cumulative: Box<[u64]> },
    /// A hash ring of virtual nodes: `(point, member)` sorted by point.
    Hash { ring: Box<[(u64, u32)]> },
    /// Two members at random; the one with fewer calls in flight.
    TwoChoices { len: usize },
}

impl Picker {
    /// A picker for `members` under `policy`. Members of weight 0 are never picked.
    pub(crate) fn new(policy: &Policy, members: &[Member<'_>]) -> Picker {
        let len = members.len();
        match policy {
            Policy::RoundRobin => Picker::RoundRobin { next: AtomicUsize::new(0), len },
            Policy::WeightedRoundRobin => match smooth_sequence(members) {
                Some(sequence) => {
                    Picker::Weighted { sequence, next: AtomicUsize::new(0), cumulative: cumulative(members) }
                }
                None => Picker::Random { cumulative: cumulative(members) },
            },
            Policy::Random => Picker::Random { cumulative: cumulative(members) },
            Policy::ConsistentHash { virtual_nodes, .. } => {
                Picker::Hash { ring: ring(members, *virtual_nodes) }
            }
            Policy::PowerOfTwoChoices => Picker::TwoChoices { len },
        }
    }

    /// Picks a member for which `usable` holds, or `None` if there is none. `key` is the
    /// call's hash key (for consistent hashing; without one, a member is picked at random);
    /// `load` is a member's calls in flight (for two choices).
    pub(crate) fn pick(
        &self,
        key: Option<&[u8]>,
        usable: &dyn Fn(usize) -> bool,
        load: &dyn Fn(usize) -> usize,
    ) -> Option<usize> {
        match self {
            Picker::RoundRobin { next, len } => {
                // Unusable members are stepped over on the shared counter, so the usable ones
                // keep equal turns.
                (0..*len).map(|_| next.fetch_add(1, Ordering::Relaxed) % len).find(|&member| usable(member))
            }
            Picker::Weighted { sequence, next, cumulative } => {
                if sequence.is_empty() {
                    return None;
                }
                let member = sequence[next.fetch_add(1, Ordering::Relaxed) % sequence.len()] as usize;
                if usable(member) {
                    return Some(member);
                }
                // The turn of a member that is out goes to the others in proportion to their
                // weights. (Walking on along the sequence instead would hand it to whoever
                // follows, skewing the shares.)
                weighted_among(cumulative, usable)
            }
            Picker::Random { cumulative, .. } => {
                let total = cumulative.last().copied().unwrap_or(0);
                if total == 0 {
                    return None;
                }
                let point = fastrand::u64(0..total);
                let member = cumulative.partition_point(|&sum| sum <= point);
                if usable(member) {
                    return Some(member);
                }
                // Some members are out: draw among the others.
                weighted_among(cumulative, usable)
            }
            Picker::Hash { ring } => {
                if ring.is_empty() {
                    return None;
                }
                // Without a key, from a random point: weighted like the ring itself.
                let start = match key {
                    Some(key) => {
                        let point = xxh3_64(key);
                        ring.partition_point(|&(p, _)| p < point)
                    }
                    None => fastrand::usize(..ring.len()),
                };
                // Clockwise from the key's point to the first usable member.
                (0..ring.len())
                    .map(|step| ring[(start + step) % ring.len()].1 as usize)
                    .find(|&member| usable(member))
            }
            Picker::TwoChoices { len } => {
                let len = *len;
                let first = random_usable(len, usable)?;
                if len == 1 {
                    return Some(first);
                }
                // The second choice: another usable member, drawn from the rest.
                let offset = fastrand::usize(1..len);
                let second = scan(first + offset, len, &|i| i != first && usable(i));
                Some(match second {
                    Some(second) if load(second) < load(first) => second,
                    _ => first,
                })
            }
        }
    }
}

/// The running sums of the members' weights.
fn cumulative(members: &[Member<'_>]) -> Box<[u64]> {
    let mut total = 0u64;
    members
        .iter()
        .map(|m| {
            total += u64::from(m.weight);
            total
        })
        .collect()
}

/// A member for which `usable` holds, drawn in proportion to the weights given as running
/// sums; `None` if no usable member has a weight.
fn weighted_among(cumulative: &[u64], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    let weight = |i: usize| cumulative[i] - if i == 0 { 0 } else { cumulative[i - 1] };
    let total: u64 = (0..cumulative.len()).filter(|&i| usable(i)).map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut point = fastrand::u64(0..total);
    (0..cumulative.len()).filter(|&i| usable(i)).find(|&i| {
        let w = weight(i);
        if point < w {
            return true;
        }
        point -= w;
        false
    })
}

/// The first member from `start` on (wrapping) for which `usable` holds.
fn scan(start: usize, len: usize, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    if len == 0 {
        return None;
    }
    (0..len).map(|step| start.wrapping_add(step) % len).find(|&member| usable(member))
}

/// A usable member drawn uniformly: by rejection a few times, then by scanning from a random
/// place.
fn random_usable(len: usize, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    if len == 0 {
        return None;
    }
    for _ in 0..4 {
        let member = fastrand::usize(..len);
        if usable(member) {
            return Some(member);
        }
    }
    scan(fastrand::usize(..len), len, usable)
}

/// nginx's smooth weighted round-robin, run for one period: each step adds every member's
/// weight to its current score, picks the highest score (the first, on ties) and takes the
/// total weight off it. Weights are divided by their greatest common divisor first, and
/// scaled down if their sum would make the period longer than [`MAX_SEQUENCE`] or its
/// computation longer than [`MAX_SEQUENCE_WORK`]. `None` when even one turn per member
/// would cost more than that.
fn smooth_sequence(members: &[Member<'_>]) -> Option<Box<[u32]>> {
    let live = members.iter().filter(|m| m.weight > 0).count() as u64;
    // Equal weights: the sequence is each member in turn, whatever the algorithm's size.
    let first = members.iter().find(|m| m.weight > 0).map(|m| m.weight);
    if members.iter().all(|m| m.weight == 0 || Some(m.weight) == first) {
        let turns = members.iter().enumerate().filter(|(_, m)| m.weight > 0);
        return Some(turns.map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX)).collect());
    }
    let max_total = MAX_SEQUENCE.min(MAX_SEQUENCE_WORK / (members.len() as u64).max(1));
    if max_total < live {
        return None;
    }
    let weights = reduced_weights(members, max_total);
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, weight) in weights.iter().enumerate() {
            current[i] += weight;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(u32::try_from(best).unwrap_or(u32::MAX));
    }
    Some(sequence.into_boxed_slice())
}

/// The members' weights divided by their greatest common divisor, and scaled to a sum of
/// about `max_total` at most (no non-zero weight falls to zero, so the sum may exceed it by
/// up to the number of members).
fn reduced_weights(members: &[Member<'_>], max_total: u64) -> Vec<i64> {
    let divisor = members.iter().map(|m| u64::from(m.weight)).fold(0, gcd).max(1);
    let mut weights: Vec<u64> = members.iter().map(|m| u64::from(m.weight) / divisor).collect();
    let total: u64 = weights.iter().sum();
    if total > max_total {
        let live = weights.iter().filter(|w| **w > 0).count() as u64;
        // Room left once every member has its one guaranteed turn.
        let room = max_total.saturating_sub(live).max(1);
        for weight in &mut weights {
            if *weight > 0 {
                *weight = 1 + (u128::from(*weight) * u128::from(room) / u128::from(total)) as u64;
            }
        }
    }
    weights.into_iter().map(|w| i64::try_from(w).unwrap_or(i64::MAX)).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A hash ring: each member of non-zero weight gets `virtual_nodes` points on average,
/// in proportion to its weight (at least one), at the hashes of `address#i`.
fn ring(members: &[Member<'_>], virtual_nodes: u32) -> Box<[(u64, u32)]> {
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    if total == 0 {
        return Box::new([]);
    }
    let live = members.iter().filter(|m| m.weight > 0).count() as u64;
    let per_member = u64::from(virtual_nodes.max(1)).min(MAX_RING_POINTS / live.max(1)).max(1);
    let points_total = per_member * live;
    let mut ring = Vec::new();
    let mut name = String::new();
    for (index, member) in members.iter().enumerate() {
        if member.weight == 0 {
            continue;
        }
        let share = u128::from(points_total) * u128::from(member.weight) / u128::from(total);
        let points = u64::try_from(share).unwrap_or(u64::MAX).clamp(1, MAX_RING_POINTS);
        for point in 0..points {
            use std::fmt::Write;
            name.clear();
            let _ = write!(name, "{}#{point}", member.address);
            ring.push((xxh3_64(name.as_bytes()), u32::try_from(index).unwrap_or(u32::MAX)));
        }
    }
    ring.sort_unstable();
    ring.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u32]) -> Vec<(String, u32)> {
        weights.iter().enumerate().map(|(i, &w)| (format!("10.0.0.{i}:80"), w)).collect()
    }

    const MEMBERS_MAX: usize = 64;

    thread_local! {
        /// The length of the list the last picker was built over.
        static LEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn picker(policy: &Policy, list: &[(String, u32)]) -> Picker {
        LEN.with(|len| len.set(list.len()));
        let members: Vec<Member<'_>> =
            list.iter().map(|(address, weight)| Member { address, weight: *weight }).collect();
        Picker::new(policy, &members)
    }

    fn counts(picker: &Picker, picks: usize, usable: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let mut counts = vec![0; MEMBERS_MAX];
        for _ in 0..picks {
            let member = picker.pick(None, usable, &|_| 0).expect("a member is usable");
            counts[member] += 1;
        }
        // Trim to the members that exist in the tests: the highest index ever used is the
        // list's length minus one, so drop trailing members past `len`.
        counts.truncate(LEN.with(|len| len.get()));
        counts
    }

    fn everyone(_: usize) -> bool {
        true
    }

    #[test]
    fn round_robin_takes_each_member_in_turn() {
        let picker = picker(&Policy::RoundRobin, &members(&[1, 1, 1]));
        let order: Vec<_> = (0..6).map(|_| picker.pick(None, &everyone, &|_| 0)).collect();
        assert_eq!(order, [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn round_robin_skips_members_that_are_not_usable() {
        let picker = picker(&Policy::RoundRobin, &members(&[1, 1, 1]));
        assert_eq!(counts(&picker, 300, &|i| i != 1), [150, 0, 150]);
        assert_eq!(picker.pick(None, &|_| false, &|_| 0), None);
    }

    #[test]
    fn smooth_weighted_round_robin_is_nginx_sequence_for_5_1_1() {
        // The example from nginx's commit introducing the algorithm: weights { a:5, b:1, c:1 }
        // give "a a b a c a a", not "a a a a a b c".
        let picker = picker(&Policy::WeightedRoundRobin, &members(&[5, 1, 1]));
        let names = ["a", "b", "c"];
        let sequence: Vec<&str> =
            (0..14).map(|_| names[picker.pick(None, &everyone, &|_| 0).expect("a member")]).collect();
        assert_eq!(sequence.join(" "), "a a b a c a a a a b a c a a");
    }

    #[test]
    fn smooth_weighted_round_robin_keeps_proportions_exactly_per_period() {
        let picker = picker(&Policy::WeightedRoundRobin, &members(&[300, 200, 100]));
        // Weights reduce to 3:2:1, a period of 6.
        assert_eq!(counts(&picker, 6000, &everyone), [3000, 2000, 1000]);
        // Without the heaviest, the others keep their ratio: their own 3000 turns go 2:1 as
        // scheduled, and the 3000 turns of the absent member are drawn 2:1 at random, so the
        // second member gets 2000 + Binomial(3000, 2/3): 4000 on average, standard deviation
        // about 26. The bounds are six deviations wide.
        let rest = counts(&picker, 6000, &|i| i != 0);
        assert_eq!(rest[0], 0);
        assert_eq!(rest[1] + rest[2], 6000);
        assert!((3_845..=4_155).contains(&rest[1]), "{rest:?}");
    }

    #[test]
    fn huge_weight_sums_are_scaled_into_a_bounded_sequence() {
        let picker = picker(&Policy::WeightedRoundRobin, &members(&[u32::MAX, 1, u32::MAX / 2]));
        let Picker::Weighted { sequence, .. } = &picker else { panic!("weighted picker") };
        assert!(sequence.len() as u64 <= MAX_SEQUENCE + 3, "{}", sequence.len());
        assert!(sequence.contains(&1), "a tiny weight still gets a turn");
    }

    #[test]
    fn the_turns_of_a_member_that_is_out_are_shared_by_weight() {
        // The heavy member out: the two light ones share its turns equally. Each has its own
        // 1000 turns plus Binomial(5000, 1/2) of the absent member's: 3500 on average,
        // standard deviation about 35; the bounds are six deviations wide.
        let picker5 = picker(&Policy::WeightedRoundRobin, &members(&[5, 1, 1]));
        let got = counts(&picker5, 7_000, &|i| i != 0);
        assert_eq!(got[0], 0);
        assert!((3_290..=3_710).contains(&got[1]), "{got:?}");
        // A heavy member in the middle of the list: no neighbour inherits its turns.
        let picker = picker(&Policy::WeightedRoundRobin, &members(&[1, 5, 1, 1]));
        let got = counts(&picker, 8_000, &|i| i != 1);
        assert_eq!(got[1], 0);
        for share in [got[0], got[2], got[3]] {
            assert!((2_300..=3_000).contains(&share), "{got:?}");
        }
    }

    #[test]
    fn large_lists_keep_the_weighted_sequence_bounded() {
        // Equal weights: one turn each, however many members.
        let equal = picker(&Policy::WeightedRoundRobin, &members(&vec![100; 10_000]));
        let Picker::Weighted { sequence, .. } = &equal else { panic!("weighted picker") };
        assert_eq!(sequence.len(), 10_000);
        // Unequal weights: a sequence within the work bound, every member in it.
        let weights: Vec<u32> = (0..1_500).map(|i| 1 + i % 7).collect();
        let uneven = picker(&Policy::WeightedRoundRobin, &members(&weights));
        let Picker::Weighted { sequence, .. } = &uneven else { panic!("weighted picker") };
        assert!(sequence.len() as u64 * 1_500 <= MAX_SEQUENCE_WORK + 1_500 * 1_500, "{}", sequence.len());
        let mut seen = vec![false; 1_500];
        sequence.iter().for_each(|&m| seen[m as usize] = true);
        assert!(seen.iter().all(|&s| s));
        // Too many unequal members for any sequence: weighted random instead.
        let weights: Vec<u32> = (0..3_000).map(|i| 1 + i % 7).collect();
        assert!(matches!(picker(&Policy::WeightedRoundRobin, &members(&weights)), Picker::Random { .. }));
    }

    #[test]
    fn the_hash_ring_is_bounded_whatever_the_virtual_node_count() {
        let policy = Policy::ConsistentHash { key: "k".into(), virtual_nodes: u32::MAX };
        let ring_picker = picker(&policy, &members(&[u32::MAX, 1, 7]));
        let Picker::Hash { ring } = &ring_picker else { panic!("hash picker") };
        assert!(ring.len() as u64 <= MAX_RING_POINTS + 3, "{}", ring.len());
        assert!((0..3).all(|m| ring.iter().any(|&(_, owner)| owner == m)), "every member is on the ring");
    }

    #[test]
    fn weight_zero_members_are_never_picked_by_weighted_policies() {
        for policy in [Policy::WeightedRoundRobin, Policy::Random, Policy::consistent_hash("k")] {
            let picker = picker(&policy, &members(&[1, 0, 1]));
            assert_eq!(counts(&picker, 2000, &everyone)[1], 0, "{policy:?}");
        }
        let none = picker(&Policy::WeightedRoundRobin, &members(&[0, 0]));
        assert_eq!(none.pick(None, &everyone, &|_| 0), None);
    }

    #[test]
    fn random_follows_the_weights_within_tolerance() {
        let picker = picker(&Policy::Random, &members(&[1, 2, 7]));
        let picks = 100_000;
        let got = counts(&picker, picks, &everyone);
        for (count, expected) in got.iter().zip([0.1, 0.2, 0.7]) {
            let share = *count as f64 / picks as f64;
            assert!((share - expected).abs() < 0.01, "{got:?}");
        }
        // Unusable members are skipped; the rest keep their ratio.
        let rest = counts(&picker, picks, &|i| i != 2);
        assert_eq!(rest[2], 0);
        let ratio = rest[1] as f64 / rest[0] as f64;
        assert!((ratio - 2.0).abs() < 0.15, "{rest:?}");
    }

    #[test]
    fn equal_weight_random_is_uniform_within_tolerance() {
        let picker = picker(&Policy::Random, &members(&[100; 4]));
        let got = counts(&picker, 40_000, &everyone);
        assert!(got.iter().all(|&c| (9_000..=11_000).contains(&c)), "{got:?}");
    }

    /// The member each of `keys` maps to.
    fn owners(picker: &Picker, keys: &[String]) -> Vec<usize> {
        keys.iter().map(|k| picker.pick(Some(k.as_bytes()), &everyone, &|_| 0).expect("a member")).collect()
    }

    #[test]
    fn consistent_hashing_remaps_about_one_in_eleven_keys_when_a_tenth_node_becomes_eleven() {
        let policy = Policy::consistent_hash("x-user");
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let ten = members(&[100; 10]);
        let mut eleven = ten.clone();
        eleven.push(("10.0.1.99:80".to_owned(), 100));
        let before = owners(&picker(&policy, &ten), &keys);
        let after = owners(&picker(&policy, &eleven), &keys);
        let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
        let share = moved.len() as f64 / keys.len() as f64;
        assert!((0.06..=0.13).contains(&share), "{share} of keys moved; expected about 1/11");
        // And every key that moved went to the new node: none shuffled between old ones.
        assert!(moved.iter().all(|&i| after[i] == 10));
        // Load is spread: no node owns more than twice its fair share.
        let mut load = [0usize; 11];
        after.iter().for_each(|&m| load[m] += 1);
        assert!(load.iter().all(|&l| l < 2 * keys.len() / 11), "{load:?}");
    }

    #[test]
    fn consistent_hashing_is_stable_and_moves_past_unusable_members() {
        let picker = picker(&Policy::consistent_hash("k"), &members(&[100; 5]));
        let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        let first = owners(&picker, &keys);
        assert_eq!(first, owners(&picker, &keys), "the same key always goes to the same member");
        for (key, &owner) in keys.iter().zip(&first) {
            let moved = picker.pick(Some(key.as_bytes()), &|i| i != owner, &|_| 0).expect("a member");
            assert_ne!(moved, owner);
            // Keys of other members stay put while `owner` is out.
            let other = keys.iter().zip(&first).find(|(_, o)| **o != owner).expect("another key");
            assert_eq!(picker.pick(Some(other.0.as_bytes()), &|i| i != owner, &|_| 0), Some(*other.1));
        }
    }

    #[test]
    fn two_choices_prefers_the_less_loaded_member() {
        let picker = picker(&Policy::PowerOfTwoChoices, &members(&[1; 4]));
        let loads = [0usize, 5, 10, 50];
        let mut got = [0usize; 4];
        for _ in 0..12_000 {
            got[picker.pick(None, &everyone, &|i| loads[i]).expect("a member")] += 1;
        }
        // The busiest member loses every comparison; the idlest wins every one it is in (half
        // of the 6 pairs), so it takes about half of the calls.
        assert_eq!(got[3], 0, "{got:?}");
        assert!(got[0] > got[1] && got[1] > got[2], "{got:?}");
        assert!((5_000..=7_000).contains(&got[0]), "{got:?}");
        // Equal loads spread evenly.
        let even = counts(&picker, 12_000, &everyone);
        assert!(even.iter().all(|&c| (2_500..=3_500).contains(&c)), "{even:?}");
    }

    #[test]
    fn two_choices_with_one_usable_member_picks_it() {
        let picker = picker(&Policy::PowerOfTwoChoices, &members(&[1; 3]));
        assert_eq!(counts(&picker, 100, &|i| i == 2), [0, 0, 100]);
    }
}

//! Properties of the ring that must hold for every set of nodes and keys.

use proptest::prelude::*;
use tritontube_core::Error;
use tritontube_core::ring::{HashRing, TokenRing, diff, key_hash};

fn ring(vnodes: u32, nodes: &[String]) -> TokenRing {
    TokenRing::with_nodes(vnodes, nodes.iter().map(|n| (n.as_str(), 1.0))).unwrap()
}

fn node_names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z]{1,6}:[1-9][0-9]{0,3}", 2..8)
        .prop_map(|s| s.into_iter().collect())
}

fn keys() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-z0-9]{1,8}/chunk-[0-9]-[0-9]{5}\\.m4s", 1..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn placement_is_independent_of_insertion_order(nodes in node_names(), keys in keys(), v in 1u32..32) {
        let a = ring(v, &nodes);
        let mut rev = nodes.clone();
        rev.reverse();
        let mut b = TokenRing::new(v);
        for n in &rev {
            b.add_node(n, 1.0).unwrap();
        }
        for k in &keys {
            prop_assert_eq!(a.owner(k).unwrap(), b.owner(k).unwrap());
        }
    }

    #[test]
    fn adding_a_node_moves_keys_only_onto_it(nodes in node_names(), keys in keys(), v in 1u32..32) {
        let (old, new_node) = nodes.split_at(nodes.len() - 1);
        let before = ring(v, old);
        let mut after = before.clone();
        after.add_node(&new_node[0], 1.0).unwrap();
        for k in &keys {
            let (o, n) = (before.owner(k).unwrap(), after.owner(k).unwrap());
            prop_assert!(o == n || n == new_node[0], "{} moved from {} to {}", k, o, n);
        }
        // Removing it again restores every placement.
        let mut back = after.clone();
        back.remove_node(&new_node[0]).unwrap();
        for k in &keys {
            prop_assert_eq!(back.owner(k).unwrap(), before.owner(k).unwrap());
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys(nodes in node_names(), keys in keys(), v in 1u32..32) {
        let before = ring(v, &nodes);
        let gone = &nodes[0];
        let mut after = before.clone();
        after.remove_node(gone).unwrap();
        for k in &keys {
            let (o, n) = (before.owner(k).unwrap(), after.owner(k).unwrap());
            prop_assert!(o == n || o == gone.as_str());
        }
    }

    #[test]
    fn preference_lists_are_distinct_and_capped(nodes in node_names(), keys in keys(), r in 1usize..10) {
        let ring = ring(16, &nodes);
        for k in &keys {
            let mut out = vec![""; r];
            let n = ring.preference(k, &mut out).unwrap();
            prop_assert_eq!(n, r.min(nodes.len()));
            let set: std::collections::BTreeSet<_> = out[..n].iter().collect();
            prop_assert_eq!(set.len(), n, "distinct");
            prop_assert_eq!(out[0], ring.owner(k).unwrap(), "the owner comes first");
            let walked: Vec<&str> = ring.walk(key_hash(k)).take(n).collect();
            prop_assert_eq!(&walked[..], &out[..n]);
        }
    }

    #[test]
    fn the_diff_agrees_with_brute_force(nodes in node_names(), keys in keys(), r in 1usize..4) {
        let (old, added) = nodes.split_at(nodes.len() - 1);
        let before = ring(8, old);
        let mut after = before.clone();
        after.add_node(&added[0], 1.0).unwrap();
        let changes = diff(&before, &after, r);
        for k in &keys {
            let h = key_hash(k);
            let (mut b1, mut b2) = (vec![""; r], vec![""; r]);
            let n1 = before.preference_by_hash(h, &mut b1).unwrap();
            let n2 = after.preference_by_hash(h, &mut b2).unwrap();
            let mut s1: Vec<_> = b1[..n1].to_vec();
            let mut s2: Vec<_> = b2[..n2].to_vec();
            s1.sort();
            s2.sort();
            let changed = s1 != s2;
            let hit = changes.iter().find(|c| c.contains(h));
            prop_assert_eq!(hit.is_some(), changed, "key {} in a changed stretch iff its owners changed", k);
            if let Some(c) = hit {
                let gained: Vec<&str> = c.gained().collect();
                prop_assert!(gained.iter().all(|g| *g == added[0].as_str()), "only the new node gains: {:?}", gained);
            }
        }
    }
}

#[test]
fn empty_ring_is_an_error_not_a_panic() {
    let ring = TokenRing::new(64);
    assert!(matches!(ring.owner("a/b"), Err(Error::EmptyRing)));
    let mut out = [""; 3];
    assert!(matches!(
        ring.preference("a/b", &mut out),
        Err(Error::EmptyRing)
    ));
    assert!(ring.shares().is_empty());
    let mut r = TokenRing::new(4);
    r.add_node("a:1", 1.0).unwrap();
    r.remove_node("a:1").unwrap();
    assert!(matches!(r.owner("x/y"), Err(Error::EmptyRing)));
    assert!(matches!(
        r.remove_node("a:1"),
        Err(Error::UnknownNode { .. })
    ));
    assert!(matches!(
        r.add_node("b:1", 0.0),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        r.add_node("b:1", f64::NAN),
        Err(Error::InvalidInput { .. })
    ));
}

#[test]
fn wraps_around_past_the_largest_token() {
    let mut r = TokenRing::new(1);
    for n in ["node-a:9001", "node-b:9002", "node-c:9003"] {
        r.add_node(n, 1.0).unwrap();
    }
    let smallest = ["node-a:9001", "node-b:9002", "node-c:9003"]
        .into_iter()
        .min_by_key(|n| key_hash(n))
        .unwrap();
    assert_eq!(r.owner_by_hash(u64::MAX).unwrap(), smallest);
    assert_eq!(r.owner("video-1/segment.m4s").unwrap(), "node-c:9003");
}

#[test]
fn weights_shift_shares_proportionally() {
    let ring = TokenRing::with_nodes(2048, [("a:1", 1.0), ("b:1", 2.0), ("c:1", 1.0)]).unwrap();
    let shares: std::collections::BTreeMap<_, _> = ring.shares().into_iter().collect();
    let total: f64 = shares.values().sum();
    assert!((total - 1.0).abs() < 1e-9);
    let ratio = shares["b:1"] / ((shares["a:1"] + shares["c:1"]) / 2.0);
    assert!(
        (ratio - 2.0).abs() < 0.15,
        "weight 2 owns about twice: {ratio} ({shares:?})"
    );
    assert_eq!(ring.weight("b:1"), Some(2.0));
}

#[test]
fn default_vnodes_balance_within_five_percent() {
    for n in [10, 100] {
        let nodes: Vec<String> = (0..n)
            .map(|i| format!("10.0.{}.{}:8090", i / 256, i % 256))
            .collect();
        let ring = ring(tritontube_core::ring::DEFAULT_VNODES, &nodes);
        let m = ring.max_over_mean();
        assert!(m <= 1.05, "{n} nodes: max/mean share {m}");
    }
}

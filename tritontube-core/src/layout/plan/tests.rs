use super::*;

fn meta(key: &ContentKey, byte: u8) -> ObjectMeta {
    ObjectMeta {
        key: key.clone(),
        size: 10,
        sha256: Sha256Digest([byte; 32]),
    }
}

fn ring(nodes: &[&str]) -> Ring {
    let nodes: Vec<crate::layout::NodeEntry> = nodes
        .iter()
        .map(|n| crate::layout::NodeEntry::new(n.parse().unwrap(), 1.0))
        .collect();
    crate::layout::ring_of(&nodes, 16)
}

#[test]
fn copies_to_new_owners_and_marks_surplus() {
    let old = ring(&["a:1", "b:2", "c:3"]);
    let new = ring(&["a:1", "b:2", "c:3", "d:4"]);
    let mut holdings = Holdings::new();
    let mut expected_moves = 0;
    for i in 0..200 {
        let key = ContentKey::from_parts(&format!("v{i}"), "f.m4s").unwrap();
        let owners = owners_of(&old, &key, 2);
        let new_owners = owners_of(&new, &key, 2);
        expected_moves += new_owners.iter().filter(|n| !owners.contains(n)).count();
        holdings.insert(
            key.clone(),
            owners.into_iter().map(|n| (n, meta(&key, 7))).collect(),
        );
    }
    let p = plan(&holdings, &new, 2, &Recorded::new());
    assert_eq!(p.files, 200);
    assert_eq!(p.copies.len(), expected_moves);
    assert!(expected_moves > 0);
    assert!(p.copies.iter().all(|c| c.target.as_str() == "d:4"));
    // Every copy gains d, so each such file has exactly one surplus copy.
    assert_eq!(p.surplus.len(), expected_moves);
    // Nothing is safe to delete before the copies are made.
    assert!(p.safe_deletions().is_empty());
    // Once d holds its copies, the same comparison says: delete surplus.
    for c in &p.copies {
        holdings
            .get_mut(&c.key)
            .unwrap()
            .push((c.target.clone(), meta(&c.key, 7)));
    }
    let after = plan(&holdings, &new, 2, &Recorded::new());
    assert!(after.copies.is_empty());
    assert_eq!(after.safe_deletions().len(), expected_moves);
}

#[test]
fn a_corrupt_copy_is_outvoted_and_replaced() {
    let r = ring(&["a:1", "b:2", "c:3"]);
    let key = ContentKey::from_parts("v", "f").unwrap();
    let owners = owners_of(&r, &key, 3);
    let mut holdings = Holdings::new();
    holdings.insert(
        key.clone(),
        vec![
            (owners[0].clone(), meta(&key, 1)),
            (owners[1].clone(), meta(&key, 1)),
            (owners[2].clone(), meta(&key, 9)),
        ],
    );
    let p = plan(&holdings, &r, 3, &Recorded::new());
    assert_eq!(p.copies.len(), 1);
    assert_eq!(p.copies[0].target, owners[2]);
    assert_eq!(p.copies[0].sha256, Sha256Digest([1; 32]));
    assert!(matches!(p.problems[..], [Problem::Corrupt { .. }]));
}

fn two_copies(good: u8, bad: u8) -> (Holdings, ContentKey, Vec<NodeAddr>, Ring) {
    let r = ring(&["a:1", "b:2", "c:3"]);
    let key = ContentKey::from_parts("v", "f").unwrap();
    let owners = owners_of(&r, &key, 2);
    let mut holdings = Holdings::new();
    holdings.insert(
        key.clone(),
        vec![
            (owners[0].clone(), meta(&key, bad)),
            (owners[1].clone(), meta(&key, good)),
        ],
    );
    (holdings, key, owners, r)
}

#[test]
fn the_record_decides_a_tie_whichever_copy_hashes_smaller() {
    // Both orders of "smaller SHA-256": the record wins each time.
    for (good, bad) in [(1u8, 9u8), (9, 1)] {
        let (holdings, key, owners, r) = two_copies(good, bad);
        let recorded: Recorded = [(key.clone(), (10, Sha256Digest([good; 32])))].into();
        let p = plan(&holdings, &r, 2, &recorded);
        assert_eq!(p.copies.len(), 1);
        assert_eq!(p.copies[0].target, owners[0], "the bad copy is rewritten");
        assert_eq!(p.copies[0].sources, vec![owners[1].clone()]);
        assert_eq!(p.copies[0].sha256, Sha256Digest([good; 32]));
        assert!(matches!(&p.problems[..], [Problem::Corrupt { node, .. }] if *node == owners[0]));
    }
}

#[test]
fn a_tie_without_a_record_is_a_conflict_not_a_coin_toss() {
    let (holdings, _, _, r) = two_copies(1, 9);
    let p = plan(&holdings, &r, 2, &Recorded::new());
    assert!(p.copies.is_empty() && p.surplus.is_empty());
    assert!(matches!(&p.problems[..], [Problem::Conflict { .. }]));
}

#[test]
fn a_recorded_file_no_node_holds_is_lost() {
    let r = ring(&["a:1", "b:2"]);
    let key = ContentKey::from_parts("v", "gone").unwrap();
    let recorded: Recorded = [(key.clone(), (10, Sha256Digest([4; 32])))].into();
    let p = plan(&Holdings::new(), &r, 2, &recorded);
    assert_eq!(p.files, 1);
    assert!(matches!(&p.problems[..], [Problem::Lost { key: k, .. }] if *k == key));
}

#[test]
fn no_copy_matching_the_record_is_lost_and_nothing_is_touched() {
    let (holdings, key, _, r) = two_copies(1, 9);
    let recorded: Recorded = [(key.clone(), (10, Sha256Digest([4; 32])))].into();
    let p = plan(&holdings, &r, 2, &recorded);
    assert!(p.copies.is_empty() && p.surplus.is_empty());
    assert!(matches!(&p.problems[..], [Problem::Lost { .. }]));
}

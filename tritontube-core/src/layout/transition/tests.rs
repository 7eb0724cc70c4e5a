//! The transitions in the style of garage's layout tests, and a
//! model-based test of a change's states: random sequences of writes and
//! change steps against a model of what each node holds, checking after
//! every step that every file written can be read where placement says to
//! look, and that a settled cluster holds every file exactly on its owners.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::id::{ContentKey, NodeAddr};
use crate::layout::{Placement, ring_of};
use crate::ring::{HashRing, TokenRing, key_hash};

const POOL: usize = 6;
const REPLICAS: usize = 2;

fn addr(i: usize) -> NodeAddr {
    NodeAddr::new(format!("10.0.0.{}:8090", i + 1)).unwrap()
}

fn key(i: u16) -> ContentKey {
    ContentKey::from_parts(&format!("v{}", i % 7), &format!("seg-{i}.m4s")).unwrap()
}

fn info(id: &str) -> ChangeInfo {
    ChangeInfo {
        id: id.into(),
        what: "test".into(),
        holder: "web-test".into(),
        started_ms: 0,
        cancel_requested: false,
        outcome: None,
    }
}

fn stable(members: &[usize]) -> ClusterState {
    ClusterState {
        nodes: members
            .iter()
            .map(|&i| NodeEntry::new(addr(i), 1.0))
            .collect(),
        replicas: REPLICAS as u32,
        vnodes: 8,
        epoch: 1,
        pending: None,
        previous: None,
        records_complete: true,
        change: None,
    }
}

fn owners(ring: &TokenRing, key: &ContentKey) -> Vec<NodeAddr> {
    let mut buf = vec![""; REPLICAS.min(ring.node_count())];
    let n = ring
        .preference_by_hash(key_hash(key.as_str()), &mut buf)
        .unwrap();
    buf[..n]
        .iter()
        .map(|a| NodeAddr::new(*a).unwrap())
        .collect()
}

#[test]
fn a_change_goes_through_its_stages_in_order() {
    let s = stable(&[0, 1, 2]);
    assert_eq!(stage(&s), Stage::Stable);
    assert!(commit(&s).is_err(), "nothing to commit");
    assert!(cleaned(&s).is_err(), "nothing to clean");
    let mut members = s.nodes.clone();
    members.push(NodeEntry::new(addr(3), 1.0));
    let p = begin(&s, members.clone(), info("c1-a")).unwrap();
    assert_eq!(stage(&p), Stage::Pending);
    assert!(
        begin(&p, members, info("c1-b")).is_err(),
        "one change at a time"
    );
    let c = commit(&p).unwrap();
    assert_eq!((stage(&c), c.epoch, c.nodes.len()), (Stage::Cleaning, 2, 4));
    assert_eq!(c.previous.as_ref().unwrap().len(), 3);
    assert!(
        request_cancel(&c, "c1-a")
            .unwrap_err()
            .to_string()
            .contains("committed")
    );
    let done = cleaned(&c).unwrap();
    assert_eq!(stage(&done), Stage::Stable);
    let ended = record_outcome(&done, "c1-a", "committed").unwrap();
    let e = request_cancel(&ended, "c1-a").unwrap_err().to_string();
    assert!(e.contains("already ended: committed"), "{e}");
    assert!(request_cancel(&ended, "c9-x").unwrap_err().is_not_found());
    assert!(record_outcome(&ended, "c9-x", "x").is_none());
}

#[test]
fn a_cancelled_change_cannot_commit_and_rolls_back() {
    let s = stable(&[0, 1, 2]);
    let p = begin(&s, stable(&[0, 1]).nodes, info("c1-a")).unwrap();
    let asked = request_cancel(&p, "c1-a").unwrap();
    assert!(matches!(commit(&asked), Err(Error::Cancelled { .. })));
    let back = roll_back(&asked).unwrap();
    assert_eq!(back.nodes, s.nodes, "the ring as it was");
    assert_eq!(back.epoch, s.epoch);
    assert_eq!(
        back.previous.as_ref().unwrap().len(),
        2,
        "the pending ring is the surplus"
    );
    assert!(roll_back(&back).is_err(), "nothing left to roll back");
}

#[derive(Debug, Clone)]
enum Op {
    Write(u16),
    Begin(usize),
    Copy,
    Commit,
    Cancel,
    Clean,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u16..60).prop_map(Op::Write),
        2 => (0..POOL).prop_map(Op::Begin),
        2 => Just(Op::Copy),
        2 => Just(Op::Commit),
        1 => Just(Op::Cancel),
        2 => Just(Op::Clean),
    ]
}

/// A cluster and what each of its nodes holds.
struct Model {
    state: ClusterState,
    held: BTreeMap<NodeAddr, BTreeSet<ContentKey>>,
    written: BTreeSet<ContentKey>,
    copied: bool,
    changes: u32,
}

impl Model {
    fn holds(&self, n: &NodeAddr, k: &ContentKey) -> bool {
        self.held.get(n).is_some_and(|s| s.contains(k))
    }

    fn apply(&mut self, op: &Op) {
        let s = self.state.clone();
        match op {
            Op::Write(i) => {
                let k = key(*i);
                let (set, _) = Placement::from_state(&s).write_set(&k, |_| false);
                for n in set {
                    self.held.entry(n).or_default().insert(k.clone());
                }
                self.written.insert(k);
            }
            Op::Begin(i) => {
                let a = addr(*i);
                let mut members = s.nodes.clone();
                if members.iter().any(|n| n.addr == a) {
                    members.retain(|n| n.addr != a);
                    if members.len() < REPLICAS {
                        return;
                    }
                } else {
                    members.push(NodeEntry::new(a, 1.0));
                }
                self.changes += 1;
                if let Ok(next) = begin(&s, members, info(&format!("c{}", self.changes))) {
                    self.state = next;
                    self.copied = false;
                }
            }
            // The copy phase: every file to each pending owner lacking it.
            Op::Copy => {
                let Some(p) = &s.pending else { return };
                let ring = ring_of(p, s.vnodes);
                for k in self.written.clone() {
                    for o in owners(&ring, &k) {
                        self.held.entry(o).or_default().insert(k.clone());
                    }
                }
                self.copied = true;
            }
            // The manager commits only after its copy phase.
            Op::Commit if self.copied => match commit(&s) {
                Ok(next) => self.state = next,
                Err(Error::Cancelled { .. }) => self.state = roll_back(&s).unwrap(),
                Err(_) => {}
            },
            Op::Commit => {}
            Op::Cancel => {
                let id = s.change.as_ref().map(|c| c.id.clone()).unwrap_or_default();
                if let Ok(asked) = request_cancel(&s, &id) {
                    self.state = roll_back(&asked).unwrap();
                }
            }
            Op::Clean => self.clean(),
        }
    }

    /// The clean-up: a copy on a node that does not own it is deleted only
    /// where every owner holds one.
    fn clean(&mut self) {
        let Ok(next) = cleaned(&self.state) else {
            return;
        };
        let ring = ring_of(&self.state.nodes, self.state.vnodes);
        for k in self.written.clone() {
            let own = owners(&ring, &k);
            if own.iter().all(|o| self.holds(o, &k)) {
                for (n, keys) in self.held.iter_mut() {
                    if !own.contains(n) {
                        keys.remove(&k);
                    }
                }
            }
        }
        self.state = next;
    }

    fn check(&self) {
        let p = Placement::from_state(&self.state);
        for k in &self.written {
            let readable = p.read_set(k, |_| false).iter().any(|n| self.holds(n, k));
            assert!(readable, "{k} cannot be read at {:?}", stage(&self.state));
        }
        if stage(&self.state) == Stage::Stable {
            let ring = ring_of(&self.state.nodes, self.state.vnodes);
            for k in &self.written {
                let own: BTreeSet<_> = owners(&ring, k).into_iter().collect();
                let on: BTreeSet<_> = self
                    .held
                    .iter()
                    .filter(|(_, s)| s.contains(k))
                    .map(|(n, _)| n.clone())
                    .collect();
                assert_eq!(on, own, "{k} is exactly on its owners once settled");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn every_file_stays_readable_through_any_sequence_of_change_steps(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        let mut m = Model {
            state: stable(&[0, 1, 2]),
            held: BTreeMap::new(),
            written: BTreeSet::new(),
            copied: false,
            changes: 0,
        };
        for op in &ops {
            m.apply(op);
            m.check();
        }
        // However it went, finishing the change settles the cluster.
        m.apply(&Op::Copy);
        m.apply(&Op::Commit);
        m.apply(&Op::Clean);
        prop_assert_eq!(stage(&m.state), Stage::Stable);
        m.check();
    }
}

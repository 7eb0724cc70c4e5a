use super::*;
use crate::store::{ObjectMeta, Sha256Digest};

fn ring() -> Ring {
    let nodes: Vec<NodeEntry> = ["a:1", "b:2", "c:3"]
        .iter()
        .map(|n| NodeEntry::new(n.parse().unwrap(), 1.0))
        .collect();
    crate::layout::ring_of(&nodes, 16)
}

fn key(s: &str) -> ContentKey {
    s.parse().unwrap()
}

fn hold(holdings: &mut Holdings, k: &ContentKey, nodes: &[&str]) {
    for n in nodes {
        holdings.entry(k.clone()).or_default().push((
            n.parse().unwrap(),
            ObjectMeta {
                key: k.clone(),
                size: 5,
                sha256: Sha256Digest([1; 32]),
            },
        ));
    }
}

#[test]
fn only_a_file_of_its_videos_recorded_generation_is_live() {
    let rec = VideoRecord::Generation(2);
    assert_eq!(rec.judge(&key("v/g2-manifest.mpd")), Verdict::Live);
    assert!(matches!(
        rec.judge(&key("v/manifest.mpd")),
        Verdict::Orphan(_)
    ));
    assert!(matches!(
        rec.judge(&key("v/g3-manifest.mpd")),
        Verdict::Orphan(_)
    ));
    let first = VideoRecord::Generation(1);
    assert_eq!(first.judge(&key("v/chunk-0-00001.m4s")), Verdict::Live);
    assert!(matches!(
        VideoRecord::Absent.judge(&key("v/manifest.mpd")),
        Verdict::Orphan(_)
    ));
    assert!(matches!(
        VideoRecord::Unreadable("boom".into()).judge(&key("v/manifest.mpd")),
        Verdict::Unchecked(_)
    ));
}

#[test]
fn orphans_leave_the_plan_unchecked_files_stay_in_it() {
    let r = ring();
    let (live, old, nobody, record_only, unread) = (
        key("live/manifest.mpd"),
        key("again/manifest.mpd"),
        key("nobody/poster.jpg"),
        key("gone/chunk-0-00001.m4s"),
        key("broken/manifest.mpd"),
    );
    let mut holdings = Holdings::new();
    hold(&mut holdings, &live, &["a:1", "b:2"]);
    hold(&mut holdings, &old, &["b:2"]);
    hold(&mut holdings, &nobody, &["c:3", "a:1"]);
    hold(&mut holdings, &unread, &["a:1"]);
    let mut recorded: Recorded = [
        (live.clone(), (5, Sha256Digest([1; 32]))),
        (old.clone(), (5, Sha256Digest([1; 32]))),
        (record_only.clone(), (9, Sha256Digest([2; 32]))),
    ]
    .into();
    let videos: HashMap<VideoId, VideoRecord> = [
        ("live", VideoRecord::Generation(1)),
        ("again", VideoRecord::Generation(2)),
        ("nobody", VideoRecord::Absent),
        ("gone", VideoRecord::Absent),
        ("broken", VideoRecord::Unreadable("bad json".into())),
    ]
    .into_iter()
    .map(|(id, r)| (id.parse().unwrap(), r))
    .collect();
    let (orphans, unchecked) = split_orphans(&mut holdings, &mut recorded, &videos, &r, 2);
    let found: Vec<(&str, usize, bool)> = orphans
        .iter()
        .map(|o| (o.key.as_str(), o.holders.len(), o.recorded))
        .collect();
    assert_eq!(
        found,
        vec![
            ("again/manifest.mpd", 1, true),
            ("gone/chunk-0-00001.m4s", 0, true),
            ("nobody/poster.jpg", 2, false),
        ]
    );
    assert_eq!(
        orphans[1].size, 9,
        "a record-only orphan's size is the record's"
    );
    assert_eq!(
        orphans[1].node,
        owners_of(&r, &record_only, 2)[0],
        "a record-only orphan names its first owner"
    );
    assert!(
        matches!(&orphans[2].problem(), Problem::Orphan { node, .. } if node.as_str() == "c:3")
    );
    assert!(matches!(&unchecked[..], [Problem::Unchecked { key, .. }] if *key == unread));
    // What is left is planned as before: the live file, and the
    // unchecked one, which is never taken for an orphan.
    assert_eq!(holdings.keys().collect::<Vec<_>>(), vec![&unread, &live]);
    assert_eq!(recorded.keys().collect::<Vec<_>>(), vec![&live]);
}

#[test]
fn a_video_not_looked_up_is_unchecked_not_an_orphan() {
    let mut holdings = Holdings::new();
    let k = key("unknown/manifest.mpd");
    hold(&mut holdings, &k, &["a:1"]);
    let (orphans, unchecked) = split_orphans(
        &mut holdings,
        &mut Recorded::new(),
        &HashMap::new(),
        &ring(),
        2,
    );
    assert!(orphans.is_empty());
    assert_eq!(unchecked.len(), 1);
    assert!(holdings.contains_key(&k));
}

//! Listing by ring range, as a migration planner uses it, is exactly the
//! full listing filtered by hash: every file once, in (hash, key) order,
//! whatever the ranges and however the pages are cut.

use proptest::prelude::*;
use tritontube_core::ContentKey;
use tritontube_core::ring::{HashRange, key_hash};
use tritontube_core::store::{ContentStoreExt, LocalContentStore};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Pages through `range` with pages of `page` files.
async fn paged(store: &LocalContentStore, range: HashRange, page: usize) -> Vec<ContentKey> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let got = store.list_range(range, after.clone(), page).await.unwrap();
        let Some(last) = got.last() else { break };
        after = Some(last.key.clone());
        out.extend(got.into_iter().map(|m| m.key));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn range_listing_is_the_filtered_full_listing(
        names in proptest::collection::btree_set("[a-z]{1,3}/[a-z0-9]{1,6}", 1..120),
        bounds in proptest::collection::vec(any::<u64>(), 1..6),
        page in 1usize..40,
    ) {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let (want_all, got) = rt.block_on(async {
            let store = LocalContentStore::new(dir.path()).unwrap();
            let mut keys: Vec<ContentKey> = Vec::new();
            for n in &names {
                let k: ContentKey = n.parse().unwrap();
                store.put_bytes(&k, bytes::Bytes::from(n.clone())).await.unwrap();
                keys.push(k);
            }
            keys.sort_by_key(|k| (key_hash(k.as_str()), k.as_str().to_string()));
            // Ranges from sorted random bounds: [b0, b1), [b1, b2), ..., [bn, top).
            let mut b = bounds.clone();
            b.sort_unstable();
            b.dedup();
            let mut ranges = vec![HashRange::new(0, Some(b[0]))];
            for w in b.windows(2) {
                ranges.push(HashRange::new(w[0], Some(w[1])));
            }
            ranges.push(HashRange::new(*b.last().unwrap(), None));
            let mut got = Vec::new();
            for r in &ranges {
                let want: Vec<ContentKey> = keys
                    .iter()
                    .filter(|k| r.contains(key_hash(k.as_str())))
                    .cloned()
                    .collect();
                let listed = paged(&store, *r, page).await;
                assert_eq!(listed, want, "range {r:?}, pages of {page}");
                got.extend(listed);
            }
            (keys, got)
        });
        // The ranges tile the ring, so together they list everything once.
        prop_assert_eq!(got, want_all);
    }
}

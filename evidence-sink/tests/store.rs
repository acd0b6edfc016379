//! The store's contract, through [`Store`] only, on both backends: batches whole or not at
//! all, duplicates stored once, filters and cursors, byte-bounded pages, a tree equal to
//! one computed in memory, append-only tables, erasure and retention that keep every leaf,
//! a reopened database that keeps its tree; and, on PostgreSQL, several replicas appending
//! at once to one database and still building one tree.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mercator_evidence::merkle::{
    self, leaf_hash, verify_consistency, verify_inclusion, Hash, MemoryTree,
};
use mercator_evidence_sink::store::{Page, RecordLookup, Removal};
use mercator_evidence_sink::{BatchOutcome, RecordFilter, SinkError, Store, VerifiedRecord};

mod common;

fn record(id: &str, user: &str, at: i64) -> VerifiedRecord {
    VerifiedRecord {
        id: id.to_owned(),
        timestamp: "t".to_owned(),
        timestamp_unix_ns: at,
        request_id: None,
        user_id: Some(user.to_owned()),
        provider: Some("openai".to_owned()),
        model: Some("gpt-4".to_owned()),
        decision: Some("allow".to_owned()),
        key_id: "ed25519:00".to_owned(),
        canonical: format!(r#"{{"id":"{id}"}}"#),
    }
}

fn everything() -> Page {
    Page {
        after: 0,
        limit: 1000,
        max_bytes: usize::MAX,
        leaves_below: None,
    }
}

async fn texts(store: &Store, filter: RecordFilter) -> Vec<String> {
    store
        .page(filter, everything())
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.text)
        .collect()
}

fn numbered(ids: std::ops::Range<usize>) -> Vec<VerifiedRecord> {
    ids.map(|i| {
        record(
            &format!("evt_{i}"),
            if i % 2 == 0 { "a" } else { "b" },
            i as i64,
        )
    })
    .collect()
}

async fn a_batch_that_conflicts_leaves_nothing_behind() {
    let store = common::fresh_store().await;
    store.append(vec![record("evt_1", "a", 1)]).await.unwrap();

    let mut changed = record("evt_1", "a", 1);
    changed.canonical = r#"{"id":"evt_1","x":1}"#.to_owned();
    let result = store.append(vec![record("evt_2", "a", 2), changed]).await;

    assert!(matches!(result, Err(SinkError::ConflictingDuplicate(_))));
    assert_eq!(
        texts(&store, RecordFilter::default()).await,
        [r#"{"id":"evt_1"}"#]
    );
    assert_eq!(store.tree_size().await.unwrap(), 1);
    // The refused batch left no leaf behind: the next record gets index 1.
    store.append(vec![record("evt_3", "a", 3)]).await.unwrap();
    let leaf = store.leaf("evt_3".to_owned()).await.unwrap().unwrap();
    assert_eq!(leaf.leaf_index, 1);
}

async fn a_duplicate_inside_one_batch_is_stored_once_with_one_leaf() {
    let store = common::fresh_store().await;

    let outcome = store
        .append(vec![record("evt_1", "a", 1), record("evt_1", "a", 1)])
        .await
        .unwrap();

    assert_eq!(
        outcome,
        BatchOutcome {
            accepted: 1,
            duplicates: 1
        }
    );
    assert_eq!(store.tree_size().await.unwrap(), 1);
}

async fn filters_combine_and_keep_arrival_order_and_pages_continue_after_the_cursor() {
    let store = common::fresh_store().await;
    store
        .append(vec![
            record("evt_3", "a", 30),
            record("evt_1", "b", 10),
            record("evt_2", "a", 20),
            record("evt_4", "a", 40),
        ])
        .await
        .unwrap();

    let filter = RecordFilter {
        user_id: Some("a".to_owned()),
        from_unix_ns: Some(20),
        to_unix_ns: Some(40),
        ..RecordFilter::default()
    };
    assert_eq!(
        texts(&store, filter).await,
        [r#"{"id":"evt_3"}"#, r#"{"id":"evt_2"}"#]
    );

    let first = store
        .page(
            RecordFilter::default(),
            Page {
                limit: 2,
                ..everything()
            },
        )
        .await
        .unwrap();
    let second = store
        .page(
            RecordFilter::default(),
            Page {
                after: first[1].position,
                limit: 2,
                ..everything()
            },
        )
        .await
        .unwrap();
    let leaves: Vec<u64> = first.iter().chain(&second).map(|r| r.leaf_index).collect();
    assert_eq!(leaves, [0, 1, 2, 3]);
    let below = store
        .page(
            RecordFilter::default(),
            Page {
                leaves_below: Some(2),
                ..everything()
            },
        )
        .await
        .unwrap();
    assert_eq!(below.len(), 2);
}

async fn a_page_stops_at_its_byte_budget_but_never_returns_nothing() {
    let store = common::fresh_store().await;
    store.append(numbered(0..10)).await.unwrap();

    let small = store
        .page(
            RecordFilter::default(),
            Page {
                max_bytes: 30,
                ..everything()
            },
        )
        .await
        .unwrap();
    let tiny = store
        .page(
            RecordFilter::default(),
            Page {
                max_bytes: 1,
                ..everything()
            },
        )
        .await
        .unwrap();

    // 14 bytes each: the third reaches the budget and ends the page.
    assert_eq!(small.len(), 3);
    assert_eq!(tiny.len(), 1);
}

async fn the_stored_tree_matches_a_tree_computed_in_memory_at_every_size() {
    let store = common::fresh_store().await;
    let mut memory = MemoryTree::default();

    for i in 0..40usize {
        let r = record(&format!("evt_{i}"), "a", i as i64);
        memory.push(leaf_hash(r.canonical.as_bytes()));
        // Batches of one and of several: nodes completed inside one batch count too.
        if i % 3 != 1 {
            store.append(vec![r]).await.unwrap();
        } else {
            let next = record(&format!("evt_{}", i + 100), "a", i as i64);
            memory.push(leaf_hash(next.canonical.as_bytes()));
            store.append(vec![r, next]).await.unwrap();
        }
        let size = memory.size();
        assert_eq!(store.tree_size().await.unwrap(), size);
        assert_eq!(
            store.root(size).await.unwrap(),
            merkle::root(&mut memory, size).unwrap(),
            "size {size}"
        );
        for m in [0, size / 2, size - 1] {
            assert_eq!(
                store.inclusion_proof(m, size).await.unwrap(),
                merkle::inclusion_proof(&mut memory, m, size).unwrap(),
                "leaf {m} of {size}"
            );
        }
    }
    let size = memory.size();
    let old = store.root(17).await.unwrap();
    let new = store.root(size).await.unwrap();
    let proof = store.consistency_proof(17, size).await.unwrap();
    assert!(verify_consistency(17, size, &old, &new, &proof));

    let with_proofs = store
        .page_with_proofs(RecordFilter::default(), everything(), size)
        .await
        .unwrap();
    assert_eq!(with_proofs.len() as u64, size);
    for (row, proof) in &with_proofs {
        let leaf = leaf_hash(row.text.as_bytes());
        assert!(verify_inclusion(&leaf, row.leaf_index, size, proof, &new));
    }
}

async fn a_proof_outside_the_tree_is_a_bad_query_not_a_server_error() {
    let store = common::fresh_store().await;
    store.append(numbered(0..3)).await.unwrap();

    assert!(matches!(
        store.inclusion_proof(5, 3).await,
        Err(SinkError::InvalidQuery { .. })
    ));
    assert!(matches!(
        store.consistency_proof(3, 2).await,
        Err(SinkError::InvalidQuery { .. })
    ));
}

async fn updates_and_deletes_outside_erasure_and_retention_are_refused_by_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_db(dir.path()).await;
    let store = Store::open_db(&db).await.unwrap();
    store.append(numbered(0..4)).await.unwrap();
    let postgres = mercator_evidence_sink::store::is_postgres_url(&db);

    let mut statements = vec![
        "UPDATE evidence SET record = '{}' WHERE id = 'evt_1'",
        "UPDATE evidence SET user_id = 'x'",
        "DELETE FROM evidence WHERE id = 'evt_1'",
        "DELETE FROM evidence_leaves WHERE id = 'evt_1'",
        "UPDATE evidence_leaves SET removed = NULL",
        "UPDATE merkle_nodes SET hash = leaf_hash FROM evidence_leaves",
        "DELETE FROM merkle_nodes",
    ];
    if postgres {
        statements.extend([
            "UPDATE evidence_leaves SET leaf_hash = '\\x00'::bytea WHERE id = 'evt_1'",
            "TRUNCATE evidence",
            "TRUNCATE evidence_leaves CASCADE",
            "TRUNCATE merkle_nodes",
        ]);
    } else {
        statements.push("UPDATE evidence_leaves SET leaf_hash = x'00' WHERE id = 'evt_1'");
    }
    for sql in statements {
        let error = common::execute_behind_the_sinks_back(&db, sql)
            .await
            .unwrap_err();
        assert!(
            error.contains("never") || error.contains("only"),
            "{sql}: {error}"
        );
    }
    assert_eq!(texts(&store, RecordFilter::default()).await.len(), 4);
    assert_eq!(store.tree_size().await.unwrap(), 4);
}

async fn erasure_removes_content_keeps_leaves_and_every_proof_still_verifies() {
    let store = common::fresh_store().await;
    store.append(numbered(0..9)).await.unwrap();
    let size = store.tree_size().await.unwrap();
    let before = store.root(size).await.unwrap();

    let erased = store
        .erase_user("a".to_owned(), "2026-12-04T00:00:00Z".to_owned())
        .await
        .unwrap();

    assert_eq!(erased, 5);
    assert_eq!(store.root(size).await.unwrap(), before);
    assert_eq!(texts(&store, RecordFilter::default()).await.len(), 4);
    assert!(matches!(
        store.record("evt_2".to_owned()).await.unwrap(),
        RecordLookup::Removed {
            how: Removal::Erased,
            leaf_index: 2,
            ..
        }
    ));
    assert_eq!(
        store.record("evt_404".to_owned()).await.unwrap(),
        RecordLookup::Unknown
    );
    let kept = store.leaf("evt_3".to_owned()).await.unwrap().unwrap();
    let proof = store.inclusion_proof(kept.leaf_index, size).await.unwrap();
    assert!(verify_inclusion(&kept.leaf_hash, 3, size, &proof, &before));
    // Erased content is a duplicate if it is sent again, never a second leaf.
    let outcome = store.append(vec![record("evt_2", "a", 2)]).await.unwrap();
    assert_eq!(outcome.duplicates, 1);
    assert_eq!(store.tree_size().await.unwrap(), size);
}

async fn pruning_removes_only_older_records_in_chunks() {
    let store = common::fresh_store().await;
    store.append(numbered(0..2500)).await.unwrap();

    let pruned = store
        .prune_before(2100, "2026-12-04T00:00:00Z".to_owned())
        .await
        .unwrap();

    assert_eq!(pruned, 2100);
    let left = store
        .page(
            RecordFilter::default(),
            Page {
                limit: 5000,
                ..everything()
            },
        )
        .await
        .unwrap();
    assert_eq!(left.len(), 400);
    assert_eq!(store.tree_size().await.unwrap(), 2500);
    assert!(matches!(
        store.record("evt_0".to_owned()).await.unwrap(),
        RecordLookup::Removed {
            how: Removal::Pruned,
            ..
        }
    ));
    assert!(matches!(
        store.record("evt_2100".to_owned()).await.unwrap(),
        RecordLookup::Stored(_)
    ));
}

async fn a_reopened_database_keeps_its_records_and_its_tree() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_db(dir.path()).await;
    let before = {
        let store = Store::open_db(&db).await.unwrap();
        store.append(numbered(0..7)).await.unwrap();
        store.root(7).await.unwrap()
    };

    let store = Store::open_db(&db).await.unwrap();

    assert!(matches!(
        store.record("evt_1".to_owned()).await.unwrap(),
        RecordLookup::Stored(_)
    ));
    assert_eq!(store.root(7).await.unwrap(), before);
    store.append(numbered(7..8)).await.unwrap();
    assert_eq!(store.tree_size().await.unwrap(), 8);
}

async fn the_store_answers_a_ping() {
    common::fresh_store().await.ping().await.unwrap();
}

on_both_backends!(
    a_batch_that_conflicts_leaves_nothing_behind,
    a_duplicate_inside_one_batch_is_stored_once_with_one_leaf,
    filters_combine_and_keep_arrival_order_and_pages_continue_after_the_cursor,
    a_page_stops_at_its_byte_budget_but_never_returns_nothing,
    the_stored_tree_matches_a_tree_computed_in_memory_at_every_size,
    a_proof_outside_the_tree_is_a_bad_query_not_a_server_error,
    updates_and_deletes_outside_erasure_and_retention_are_refused_by_the_database,
    erasure_removes_content_keeps_leaves_and_every_proof_still_verifies,
    pruning_removes_only_older_records_in_chunks,
    a_reopened_database_keeps_its_records_and_its_tree,
    the_store_answers_a_ping,
);

/// Several sink replicas, each with its own store (and connection pool) on one PostgreSQL
/// database, append at once: every record gets exactly one leaf, the indices run 0..n with
/// no gap or repeat, and every replica serves the same tree, equal to one computed from the
/// leaves in index order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_appending_at_once_to_one_postgres_database_keep_one_tree() {
    common::on(
        common::Backend::Postgres,
        "replicas_appending_at_once",
        async {
            const REPLICAS: usize = 4;
            const BATCHES: usize = 15;
            const PER_BATCH: usize = 5;
            let dir = tempfile::tempdir().unwrap();
            let db = common::fresh_db(dir.path()).await;
            let mut replicas = Vec::new();
            for _ in 0..REPLICAS {
                replicas.push(Store::open_db(&db).await.unwrap());
            }

            let mut tasks = Vec::new();
            for (r, store) in replicas.iter().enumerate() {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    for b in 0..BATCHES {
                        let batch: Vec<VerifiedRecord> = (0..PER_BATCH)
                            .map(|i| record(&format!("evt_r{r}_b{b}_{i}"), "a", 0))
                            .collect();
                        // Every replica also resends one record of replica 0: a duplicate
                        // racing its first copy must still be stored once.
                        let mut batch = batch;
                        batch.push(record(&format!("evt_r0_b{b}_0"), "a", 0));
                        store.append(batch).await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }

            let total = (REPLICAS * BATCHES * PER_BATCH) as u64;
            let mut leaves: Vec<(u64, Hash)> = Vec::new();
            for r in 0..REPLICAS {
                for b in 0..BATCHES {
                    for i in 0..PER_BATCH {
                        let id = format!("evt_r{r}_b{b}_{i}");
                        let leaf = replicas[0].leaf(id.clone()).await.unwrap().unwrap();
                        assert_eq!(
                            leaf.leaf_hash,
                            leaf_hash(format!(r#"{{"id":"{id}"}}"#).as_bytes())
                        );
                        leaves.push((leaf.leaf_index, leaf.leaf_hash));
                    }
                }
            }
            leaves.sort_by_key(|(index, _)| *index);
            let indices: Vec<u64> = leaves.iter().map(|(index, _)| *index).collect();
            assert_eq!(indices, (0..total).collect::<Vec<_>>());

            let mut memory = MemoryTree::new(leaves.into_iter().map(|(_, hash)| hash).collect());
            let expected = merkle::root(&mut memory, total).unwrap();
            for store in &replicas {
                assert_eq!(store.tree_size().await.unwrap(), total);
                assert_eq!(store.root(total).await.unwrap(), expected);
            }
        },
    )
    .await;
}

//! The idempotency bucket's batched reads and writes against a real
//! nats-server, including more keys than one batched read carries, and a
//! bucket that has gone.

use hookmesh_nats::definitions::WEBHOOK_DEDUP_BUCKET;
use hookmesh_runtime::kv::{SeenKeys, SeenKeysError};
use hookmesh_tests::TestNats;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_reads_find_exactly_the_recorded_keys_and_fail_loudly_without_the_bucket() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let seen = SeenKeys::open(&js, &WEBHOOK_DEDUP_BUCKET, 1).await.unwrap();
    let keys: Vec<String> = (0..2500)
        .map(|n| SeenKeys::key("test.scope", &format!("id {n}")))
        .collect();
    let recorded: Vec<String> = keys.iter().step_by(3).cloned().collect();
    seen.insert_many(&recorded).await.unwrap();
    seen.insert_many(&recorded[..10]).await.unwrap();

    let found = seen.contains_many(&keys).await.unwrap();
    assert_eq!(found.len(), keys.len(), "one answer per key, in order");
    for (n, found) in found.into_iter().enumerate() {
        assert_eq!(found, n % 3 == 0, "key {n}");
    }
    assert!(seen.contains_many(&[] as &[&str]).await.unwrap().is_empty());

    js.delete_stream("KV_webhook_dedup").await.unwrap();
    assert!(matches!(
        seen.contains_many(&keys[..5]).await,
        Err(SeenKeysError::Unavailable { .. })
    ));
    assert!(matches!(
        seen.insert_many(&keys[..5]).await,
        Err(SeenKeysError::Unavailable { .. })
    ));
}

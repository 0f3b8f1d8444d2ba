//! The stream definitions of `nats/streams/`, applied to a real broker:
//! created from the very files, ensured idempotently, updated in place where
//! NATS allows it, and refused with a way out where it does not.

use std::time::Duration;

use async_nats::jetstream::stream::{self, StorageType};
use hookmesh_nats::ensure::{StreamChange, ensure_stream};
use hookmesh_nats::{EnsureError, STREAMS, ensure_streams};
use hookmesh_tests::TestNats;

fn definition(name: &str) -> hookmesh_nats::StreamDefinition {
    *STREAMS.iter().find(|d| d.name() == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_is_created_from_its_file_and_ensuring_again_changes_nothing() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    ensure_streams(&js, STREAMS, 1).await.unwrap();
    for definition in STREAMS {
        let declared = definition.config(1).unwrap();
        let mut running = js.get_stream(definition.name()).await.unwrap();
        let config = running.info().await.unwrap().config.clone();
        assert_eq!(config.subjects, declared.subjects, "{}", definition.file);
        assert_eq!(config.max_age, declared.max_age, "{}", definition.file);
        assert_eq!(
            config.duplicate_window, declared.duplicate_window,
            "{}",
            definition.file
        );
        assert_eq!(config.storage, StorageType::File, "{}", definition.file);
        assert_eq!(
            config.discard,
            stream::DiscardPolicy::New,
            "{}",
            definition.file
        );
        assert_eq!(
            ensure_stream(&js, definition, 1).await.unwrap(),
            StreamChange::Unchanged,
            "{}",
            definition.file
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_limit_is_applied_in_place() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let mut older = definition("SWEEPS").config(1).unwrap();
    older.max_age = Duration::from_secs(3600);
    js.create_stream(older).await.unwrap();
    assert_eq!(
        ensure_stream(&js, &definition("SWEEPS"), 1).await.unwrap(),
        StreamChange::Updated(vec!["max_age".to_owned()])
    );
    let mut running = js.get_stream("SWEEPS").await.unwrap();
    assert_eq!(
        running.info().await.unwrap().config.max_age,
        definition("SWEEPS").config(1).unwrap().max_age
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_nats_cannot_apply_names_the_fields_and_the_way_out() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let mut in_memory = definition("BUDDY").config(1).unwrap();
    in_memory.storage = StorageType::Memory;
    in_memory.max_bytes = 1 << 20;
    js.create_stream(in_memory).await.unwrap();
    let error = ensure_stream(&js, &definition("BUDDY"), 1)
        .await
        .unwrap_err();
    assert!(matches!(error, EnsureError::CannotUpdate { .. }), "{error}");
    let message = error.to_string();
    for expected in [
        "storage",
        "nats/streams/BUDDY.json",
        "nats stream backup BUDDY",
        "nats stream rm BUDDY",
    ] {
        assert!(
            message.contains(expected),
            "{expected:?} missing from: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_consumer_files_are_valid_consumers_of_their_streams() {
    use async_nats::jetstream::consumer::pull;

    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    ensure_streams(&js, STREAMS, 1).await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats/replay");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let config: pull::Config = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let filter = config.filter_subject.clone();
        let stream = STREAMS
            .iter()
            .map(|d| d.config(1).unwrap())
            .find(|c| {
                c.subjects
                    .iter()
                    .any(|s| hookmesh_nats::subject_matches(s, &filter))
            })
            .unwrap_or_else(|| panic!("{}: no stream holds {filter}", path.display()))
            .name;
        js.create_consumer_on_stream(config, stream.as_str())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked += 1;
    }
    assert!(checked >= 2);
}

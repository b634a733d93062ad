//! The scheduler learns hosts' keys from heartbeats the server kept, without waiting for the
//! next one; a host that never sent one is reported by name.
#![allow(clippy::unwrap_used)]

mod support;

use flotilla_events::Timestamp;
use flotilla_protocol::subjects;
use flotilla_protocol::wire::{self, Heartbeat};
use flotilla_scheduler::transport::TransportError;
use flotilla_scheduler::transport::bus::Bus;
use std::time::Duration;

/// A heartbeat sent before the deploy starts is enough: `heartbeats` answers from the kept
/// stream at once (executors beat every 5 s; the wait allowed here is far shorter), and a
/// silent host is named in the error.
#[tokio::test]
async fn kept_heartbeats_answer_at_once_and_silent_hosts_are_named() {
    let nats = support::Nats::start();
    let bus = Bus::connect(&nats.url, None).await.unwrap();
    let client = async_nats::connect(&nats.url).await.unwrap();
    let beat = Heartbeat {
        host: "10.0.0.5".into(),
        executor_version: "0.1.0".into(),
        docker_version: "20.10.24".into(),
        containers: vec![],
        at: Timestamp::now(),
        period_ms: 5000,
    };
    client
        .publish(
            subjects::heartbeat_subject("10.0.0.5"),
            wire::encode(&beat).unwrap().into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    // The stream stores it asynchronously from the publish: wait until it is kept.
    let js = nats.jetstream().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = js.get_stream(subjects::HEARTBEATS_STREAM).await.unwrap();
        if stream.info().await.unwrap().state.messages == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "heartbeat never kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let seen = bus
        .heartbeats(&["10.0.0.5".to_owned()], Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(seen["10.0.0.5"].docker_version, "20.10.24");

    let err = bus
        .heartbeats(
            &["10.0.0.5".to_owned(), "10.0.0.6".to_owned()],
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    match err {
        TransportError::HostsSilent { hosts, .. } => assert_eq!(hosts, ["10.0.0.6"]),
        other => panic!("{other}"),
    }
}

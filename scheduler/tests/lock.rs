//! The deploy lock on a real NATS server: one holder at a time, waiting works, a dead
//! holder's lock expires, release frees it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use flotilla_scheduler::transport::lock::{LockError, LockInfo, Locks, lock_key};
use std::time::Duration;

fn info(who: &str) -> LockInfo {
    LockInfo {
        holder: who.into(),
        message: format!("{who} deploying"),
        acquired_at: "2026-11-26T08:00:00Z".into(),
        machine: "laptop".into(),
        version: Some("abc".into()),
        deploy_id: None,
        expires_at_ms: None,
    }
}

/// A second deploy of the same service is refused with who holds the lock; another
/// destination is independent; after release the lock can be taken again.
#[tokio::test]
async fn one_holder_at_a_time() {
    let nats = support::Nats::start();
    let locks = Locks::open(&nats.jetstream().await, Duration::from_secs(30))
        .await
        .unwrap();
    let key = lock_key("myapp", None);
    let held = locks.acquire(&key, &info("alice")).await.unwrap();
    match locks.acquire(&key, &info("bob")).await {
        Err(LockError::Held { info, .. }) => assert_eq!(info.holder, "alice"),
        other => panic!("expected Held, got {other:?}"),
    }
    let staging = locks
        .acquire(&lock_key("myapp", Some("staging")), &info("bob"))
        .await;
    assert!(staging.is_ok(), "another destination has its own lock");
    assert_eq!(locks.status(&key).await.unwrap().unwrap().holder, "alice");
    held.release().await.unwrap();
    assert_eq!(locks.status(&key).await.unwrap(), None);
    locks.acquire(&key, &info("bob")).await.unwrap();
}

/// `--lock-wait`: a waiting deploy gets the lock once the holder releases it, and gives up
/// with the holder's name when the wait runs out.
#[tokio::test]
async fn waiting_for_the_lock() {
    let nats = support::Nats::start();
    let locks = Locks::open(&nats.jetstream().await, Duration::from_secs(30))
        .await
        .unwrap();
    let held = locks.acquire("svc", &info("alice")).await.unwrap();
    let err = locks
        .acquire_waiting(
            "svc",
            &info("bob"),
            Duration::from_millis(300),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::WaitTimedOut { .. }), "{err}");
    assert!(err.to_string().contains("alice"));

    let waiter = {
        let locks = locks.clone();
        tokio::spawn(async move {
            locks
                .acquire_waiting(
                    "svc",
                    &info("bob"),
                    Duration::from_secs(20),
                    Duration::from_millis(100),
                )
                .await
        })
    };
    held.release().await.unwrap();
    let bobs = waiter.await.unwrap().unwrap();
    assert_eq!(locks.status("svc").await.unwrap().unwrap().holder, "bob");
    bobs.release().await.unwrap();
}

/// A holder that stops renewing (crashed) loses the lock after the TTL; a live holder keeps
/// it well past the TTL because it renews.
#[tokio::test]
async fn renewal_keeps_it_and_a_dead_holder_expires() {
    let nats = support::Nats::start();
    let locks = Locks::open(&nats.jetstream().await, Duration::from_secs(2))
        .await
        .unwrap();
    let live = locks.acquire("live", &info("alice")).await.unwrap();
    let dead = locks.acquire("dead", &info("carol")).await.unwrap();
    drop(dead); // stops renewing, as a crashed deploy would
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while locks.status("dead").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "abandoned lock never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The dead lock expired after at least one TTL; the live one was renewed through it.
    live.check().unwrap();
    assert_eq!(locks.status("live").await.unwrap().unwrap().holder, "alice");
    live.release().await.unwrap();
}

/// Resuming a deploy whose scheduler died takes over that deploy's lock at once; any other
/// deploy still finds it held.
#[tokio::test]
async fn resuming_deploy_takes_over_its_own_lock() {
    let nats = support::Nats::start();
    let locks = Locks::open(&nats.jetstream().await, Duration::from_secs(60))
        .await
        .unwrap();
    let mut first = info("alice");
    first.deploy_id = Some("01DEPLOY".into());
    drop(locks.acquire("svc", &first).await.unwrap()); // the scheduler died holding it
    let mut other = info("bob");
    other.deploy_id = Some("01OTHER".into());
    assert!(matches!(
        locks.acquire("svc", &other).await,
        Err(LockError::Held { .. })
    ));
    let resumed = locks.acquire("svc", &first).await.unwrap();
    resumed.release().await.unwrap();
    assert_eq!(locks.status("svc").await.unwrap(), None);
}

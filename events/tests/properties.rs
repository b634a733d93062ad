//! Properties of the folds: state does not depend on how events were batched,
//! redelivered or stored, only on the events.
#![allow(clippy::unwrap_used)]

use flotilla_events::event::{self, Event, Step};
use flotilla_events::sample::Story;
use flotilla_events::{
    DeployId, Envelope, EventId, EventLog, MemoryLog, NewEvent, Projection, Projections, SledLog,
    Timestamp,
};
use proptest::prelude::*;

/// Deploys of two services, some failing, some rolling back, interleaved as
/// hosts would report them, plus stray events in odd places.
fn scenario() -> impl Strategy<Value = Vec<NewEvent>> {
    let deploy = (1usize..5, any::<bool>(), any::<bool>(), any::<bool>());
    let stray = (0u8..6, 0u128..6, 0usize..4, any::<u16>());
    (
        prop::collection::vec(deploy, 1..6),
        prop::collection::vec(any::<u64>(), 0..400),
        prop::collection::vec((stray, any::<prop::sample::Index>()), 0..12),
    )
        .prop_map(|(deploys, picks, strays)| {
            let mut streams: Vec<std::collections::VecDeque<NewEvent>> = deploys
                .iter()
                .enumerate()
                .map(|(i, &(hosts, fails, has_previous, api))| {
                    let mut story = Story::new(
                        &format!("01D00000000000000000000{i:03}"),
                        &format!("v{i}"),
                        hosts,
                    );
                    if api {
                        story.service = "api".into();
                    }
                    story.failing_host = fails.then(|| "web-1".to_owned());
                    story.previous = (has_previous && i > 0).then(|| format!("v{}", i - 1));
                    story.first_id = i as u128 * 10_000 + 1;
                    story.events().into()
                })
                .collect();
            let mut out = Vec::new();
            let mut picks = picks.into_iter();
            while streams.iter().any(|s| !s.is_empty()) {
                let live: Vec<usize> = (0..streams.len())
                    .filter(|&i| !streams[i].is_empty())
                    .collect();
                let pick = picks.next().unwrap_or(0) as usize % live.len();
                out.push(streams[live[pick]].pop_front().unwrap());
            }
            for (n, ((kind, deploy, host, x), at)) in strays.into_iter().enumerate() {
                let deploy_id = DeployId::from(format!("01D00000000000000000000{deploy:03}"));
                let host = format!("web-{host}");
                let e: Event = match kind {
                    0 => event::HostSucceeded {}.into(),
                    1 => event::HostFailed {
                        step: Step::PullImage,
                        error: format!("e{x}"),
                        cause: event::FailureCause::StepFailed,
                    }
                    .into(),
                    2 => event::DeployCompleted {}.into(),
                    3 => event::ContainerStarted {
                        name: format!("stray-{x}"),
                        container_id: "c".into(),
                        version: "vx".into(),
                        role: "web".into(),
                    }
                    .into(),
                    4 => event::ProxySwitched {
                        from: None,
                        to: format!("stray-{x}"),
                    }
                    .into(),
                    _ => event::OldContainerStopped {
                        name: "app-web-v0".into(),
                    }
                    .into(),
                };
                let mut stray = NewEvent::new(deploy_id, "stray", e).on_host(host);
                stray.id = EventId::from_u128(900_000 + n as u128);
                stray.at = Timestamp::from_unix_ms(1_795_000_000_000 + i64::from(x));
                let position = at.index(out.len() + 1);
                out.insert(position, stray);
            }
            out
        })
}

fn fold_one_by_one(events: &[Envelope]) -> Projections {
    let mut state = Projections::default();
    for e in events {
        state.apply(e);
    }
    state
}

fn stored(events: &[NewEvent]) -> Vec<Envelope> {
    events
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, e)| e.into_envelope(i as u64 + 1))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Appending in batches of any size, with redelivered events mixed in,
    /// then rebuilding, gives the same state as folding each event once, in
    /// order; and folding in chunks equals folding event by event.
    #[test]
    fn batching_and_redelivery_do_not_change_state(
        events in scenario(),
        sizes in prop::collection::vec(1usize..40, 1..20),
        redeliver in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let expected = fold_one_by_one(&stored(&events));

        let log = MemoryLog::new();
        let mut rest = events.as_slice();
        let mut sent: Vec<NewEvent> = Vec::new();
        let mut sizes = sizes.iter().cycle();
        let mut redeliver = redeliver.iter();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            let mut batch = rest[..n].to_vec();
            if let (Some(index), false) = (redeliver.next(), sent.is_empty()) {
                batch.insert(0, index.get(&sent).clone());
            }
            sent.extend_from_slice(&rest[..n]);
            log.append_batch(batch).unwrap();
            rest = &rest[n..];
        }
        prop_assert_eq!(log.last_seq(), events.len() as u64);
        prop_assert_eq!(&Projections::rebuild(&log).unwrap(), &expected);

        let mut chunked = Projections::default();
        let envelopes = stored(&events);
        for chunk in envelopes.chunks(7) {
            chunked.apply_all(chunk);
        }
        prop_assert_eq!(&chunked, &expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Closing the sled log and reopening it, then replaying, gives the same
    /// state as before closing.
    #[test]
    fn reopen_and_replay_gives_equal_state(events in scenario(), batch in 1usize..50) {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let log = SledLog::open(dir.path()).unwrap();
            for chunk in events.chunks(batch) {
                log.append_batch(chunk.to_vec()).unwrap();
            }
            Projections::rebuild(&log).unwrap()
        };
        prop_assert_eq!(&before, &fold_one_by_one(&stored(&events)));
        let log = SledLog::open(dir.path()).unwrap();
        prop_assert_eq!(&Projections::rebuild(&log).unwrap(), &before);
    }
}

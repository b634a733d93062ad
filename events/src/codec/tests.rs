//! Records written by earlier builds must decode forever: stored byte fixtures
//! of every schema version, decoded by this build.
//!
//! `FLOTILLA_BLESS=1 cargo test -p flotilla-events codec` writes a fixture
//! that does not exist yet (never overwrites one: they are history).

use std::path::PathBuf;

use super::*;
use crate::envelope::NewEvent;
use crate::event::{self, Event};
use crate::ids::{DeployId, EventId, Timestamp};
use crate::sample;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Frame records as `[u32 little-endian length][record]...`.
fn frame(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        out.extend_from_slice(record);
    }
    out
}

fn unframe(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut records = Vec::new();
    while let Some((len, rest)) = bytes.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let (record, rest) = rest.split_at(len);
        records.push(record);
        bytes = rest;
    }
    records
}

/// Read a fixture, writing it from `records` first when blessing a new one.
fn stored(name: &str, records: impl FnOnce() -> Vec<Vec<u8>>) -> Vec<u8> {
    let path = fixture(name);
    if !path.exists() && std::env::var_os("FLOTILLA_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("fixture dir")).expect("create fixture dir");
        std::fs::write(&path, frame(&records())).expect("write fixture");
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn current_sample() -> Vec<Envelope> {
    sample::every_event_type()
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.into_envelope(i as u64 + 1))
        .collect()
}

/// Events written by this schema version still decode to the same values:
/// if this fails after changing an event, bump SCHEMA_VERSION and add an
/// upcaster instead of editing the fixture.
#[test]
fn current_version_fixture_decodes() {
    let expected = current_sample();
    let bytes = stored("records-v6.bin", || {
        expected
            .iter()
            .map(|e| encode(e).expect("encode"))
            .collect()
    });
    let decoded: Vec<Envelope> = unframe(&bytes)
        .into_iter()
        .map(|r| decode(r).expect("fixture record decodes"))
        .collect();
    assert_eq!(decoded, expected);
    let mut seen: Vec<&str> = decoded.iter().map(|e| e.type_name()).collect();
    seen.sort_unstable();
    seen.dedup();
    let mut all = Event::TYPE_NAMES.to_vec();
    all.sort_unstable();
    assert_eq!(seen, all, "the fixture covers every event type");
}

/// The event types schema 4 added (schema 3 records are otherwise the current shape).
const ADDED_IN_4: &[&str] = &["HostEnrolled"];

/// The event types schema 5 added (schema 4 records are otherwise the current shape).
const ADDED_IN_5: &[&str] = &[
    "OperationStarted",
    "OperationSucceeded",
    "OperationFailed",
    "OperationFinished",
];

/// The event types schema 6 added (schema 5 records are otherwise the current shape).
const ADDED_IN_6: &[&str] = &["ImageRemoved", "ImageKept"];

/// Whether `e`'s type came after schema `version`.
fn added_after(version: u16, e: &Envelope) -> bool {
    let added: &[(u16, &[&str])] = &[(4, ADDED_IN_4), (5, ADDED_IN_5), (6, ADDED_IN_6)];
    added
        .iter()
        .any(|(v, names)| *v > version && names.contains(&e.type_name()))
}

/// A log written by schema 5 reads as it was written: schema 6 only appended event types.
#[test]
fn version_5_fixture_decodes() {
    let bytes = std::fs::read(fixture("records-v5.bin")).expect("records-v5.bin is stored");
    let decoded: Vec<Envelope> = unframe(&bytes)
        .into_iter()
        .map(|r| decode(r).expect("v5 record decodes"))
        .collect();
    let expected: Vec<Envelope> = current_sample()
        .into_iter()
        .filter(|e| !added_after(5, e))
        .map(|mut e| {
            e.schema_version = 5;
            e
        })
        .collect();
    assert_eq!(decoded, expected);
}

/// A log written by schema 4 reads as it was written: schema 5 only appended event types.
#[test]
fn version_4_fixture_decodes() {
    let bytes = std::fs::read(fixture("records-v4.bin")).expect("records-v4.bin is stored");
    let decoded: Vec<Envelope> = unframe(&bytes)
        .into_iter()
        .map(|r| decode(r).expect("v4 record decodes"))
        .collect();
    let expected: Vec<Envelope> = current_sample()
        .into_iter()
        .filter(|e| !added_after(4, e))
        .map(|mut e| {
            e.schema_version = 4;
            e
        })
        .collect();
    assert_eq!(decoded, expected);
}

/// A log written by schema 3 reads as it was written: schema 4 only appended event types.
#[test]
fn version_3_fixture_decodes() {
    let bytes = std::fs::read(fixture("records-v3.bin")).expect("records-v3.bin is stored");
    let decoded: Vec<Envelope> = unframe(&bytes)
        .into_iter()
        .map(|r| decode(r).expect("v3 record decodes"))
        .collect();
    let expected: Vec<Envelope> = current_sample()
        .into_iter()
        .filter(|e| !added_after(3, e))
        .map(|mut e| {
            e.schema_version = 3;
            e
        })
        .collect();
    assert_eq!(decoded, expected);
}

/// A log written by schema 2, before `HostFailed` had a cause, still reads: every event
/// decodes to what schema 2 wrote, and the failure's cause is read back from its text.
#[test]
fn version_2_fixture_is_upcast() {
    let bytes = std::fs::read(fixture("records-v2.bin")).expect("records-v2.bin is stored");
    let decoded: Vec<Envelope> = unframe(&bytes)
        .into_iter()
        .map(|r| decode(r).expect("v2 record decodes"))
        .collect();
    let expected: Vec<Envelope> = current_sample()
        .into_iter()
        .filter(|e| !added_after(2, e))
        .map(|mut e| {
            e.schema_version = 2;
            e
        })
        .collect();
    assert_eq!(decoded, expected);
    let failure = decoded
        .iter()
        .find_map(|e| match &e.event {
            Event::HostFailed(f) => Some(f),
            _ => None,
        })
        .expect("the v2 fixture has a HostFailed");
    assert_eq!(failure.cause, event::FailureCause::StepFailed);
}

/// Schema 2 wrote a refusal and a timeout as failures with a telling text; the upcast
/// gives them their own cause.
#[test]
fn version_2_refusal_and_timeout_get_their_cause() {
    let cause = |error: &str| {
        event::HostFailed::from(v2::HostFailed {
            step: event::Step::PullImage,
            error: error.into(),
        })
        .cause
    };
    assert_eq!(
        cause("the executor refused the job: Expired: expired at 2026-11-26T08:00:00Z"),
        event::FailureCause::Refused
    );
    assert_eq!(
        cause("no word from the executor for 300s (step_timeout)"),
        event::FailureCause::TimedOut
    );
    assert_eq!(cause("pull failed"), event::FailureCause::StepFailed);
}

fn v1_sample() -> Vec<v1::Envelope> {
    let base = |seq: u64, host: Option<&str>, event: v1::Event| v1::Envelope {
        id: EventId::from_u128(u128::from(seq)),
        deploy_id: DeployId::from("01D00000000000000000000V1A"),
        seq,
        at: Timestamp::from_unix_ms(1_790_000_000_000 + seq as i64),
        host: host.map(str::to_owned),
        schema_version: 1,
        actor: "bob@desk".into(),
        event,
    };
    vec![
        base(
            1,
            None,
            v1::Event::HookRan(v1::HookRan {
                name: "pre-deploy".into(),
                exit_code: 0,
            }),
        ),
        base(
            2,
            Some("web-1"),
            v1::Event::ImagePulled(event::ImagePulled {
                image: "registry.local/app:v1".into(),
                digest: "sha256:abc".into(),
                bytes: 1234,
                duration_ms: 56,
            }),
        ),
        base(
            3,
            Some("web-1"),
            v1::Event::HookRan(v1::HookRan {
                name: "post-deploy".into(),
                exit_code: 3,
            }),
        ),
    ]
}

/// A log written by schema 1, before `HookRan` had a duration, still reads:
/// the upcaster fills the new field with "unknown" and keeps everything else.
#[test]
fn version_1_fixture_is_upcast() {
    let bytes = stored("records-v1.bin", || {
        v1_sample()
            .iter()
            .map(|e| encode_v1(e).expect("encode"))
            .collect()
    });
    let decoded: Vec<Envelope> = unframe(&bytes)
        .into_iter()
        .map(|r| decode(r).expect("v1 record decodes"))
        .collect();
    let hook = |seq: u64, name: &str, exit_code| {
        let mut e = NewEvent {
            id: EventId::from_u128(u128::from(seq)),
            deploy_id: DeployId::from("01D00000000000000000000V1A"),
            at: Timestamp::from_unix_ms(1_790_000_000_000 + seq as i64),
            host: None,
            schema_version: 1,
            actor: "bob@desk".into(),
            event: event::HookRan {
                name: name.into(),
                exit_code,
                duration_ms: None,
            }
            .into(),
        };
        if seq == 3 {
            e.host = Some("web-1".into());
        }
        e.into_envelope(seq)
    };
    assert_eq!(decoded.len(), 3);
    assert_eq!(decoded[0], hook(1, "pre-deploy", 0));
    assert_eq!(decoded[2], hook(3, "post-deploy", 3));
    let Event::ImagePulled(pulled) = &decoded[1].event else {
        panic!("expected ImagePulled, got {:?}", decoded[1].event);
    };
    assert_eq!(pulled.digest, "sha256:abc");
    assert_eq!(decoded[1].host.as_deref(), Some("web-1"));
}

/// Damaged or foreign records give an error saying what is wrong, not a panic
/// and not a wrong event.
#[test]
fn damaged_records_are_errors() {
    let record = encode(&current_sample()[0]).expect("encode");
    assert!(matches!(decode(&[]), Err(CodecError::Empty)));
    let mut future = record.clone();
    future[0] = 200;
    let err = decode(&future).expect_err("unknown version");
    assert!(
        err.to_string().contains("unknown record version 200"),
        "{err}"
    );
    for cut in 1..record.len() {
        assert!(
            decode(&record[..cut]).is_err(),
            "truncated at {cut} must fail"
        );
    }
    let mut longer = record.clone();
    longer.push(0);
    assert!(matches!(
        decode(&longer),
        Err(CodecError::TrailingBytes { .. })
    ));
}

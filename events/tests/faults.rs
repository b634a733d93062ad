//! Ordinary accidents around the log: a full disk, a crash while sled writes
//! a snapshot, damage at the end of the data, a read-only file system. After
//! each, the acknowledged events are readable once the cause is gone (or
//! salvage recovers every intact one), and errors name the real cause with
//! the right next step.
//!
//! The disk-full and read-only tests mount a small tmpfs, so they need root
//! (CI runs as root); run elsewhere, they fail saying so rather than pass
//! without testing anything.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flotilla_events::log::NextStep;
use flotilla_events::sample::Story;
use flotilla_events::{Envelope, EventLog, LogError, NewEvent, SledLog};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// The events of deploy number `i` (26 events, distinct ids).
fn deploy(i: u128) -> Vec<NewEvent> {
    let mut story = Story::new(&format!("01D0000000000000000000{i:04}"), "v1", 3);
    story.first_id = i * 1000 + 1;
    story.events()
}

fn read_all(log: &SledLog) -> Vec<Envelope> {
    log.read_all().unwrap().collect::<Result<_, _>>().unwrap()
}

/// A log as a deploy leaves it: events appended a few at a time (as the
/// engine appends reports), the log closed and opened again between deploys
/// (sled writes a snapshot on each open), and opened once more at the end
/// (`flotilla history`), so the newest snapshot covers every event.
fn write_deploys(dir: &Path, deploys: u128) -> (Vec<Envelope>, usize) {
    let mut last_batch = 0;
    for i in 0..deploys {
        let log = SledLog::open(dir).unwrap();
        for chunk in deploy(i).chunks(3) {
            log.append_batch(chunk.to_vec()).unwrap();
            last_batch = chunk.len();
        }
    }
    let log = SledLog::open(dir).unwrap();
    (read_all(&log), last_batch)
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("sled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .collect();
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A tmpfs of a given size, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs to fill a disk or make it read-only, which needs root: \
             run it as root (CI does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let options = format!("size={size},mode=0700");
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, flags: MsFlags, options: &str) {
        mount(
            None::<&str>,
            self.dir.path(),
            None::<&str>,
            MsFlags::MS_REMOUNT | flags,
            Some(options),
        )
        .unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

/// How many unfinished snapshots sled left in the log in `dir`.
fn generating(dir: &Path) -> usize {
    snapshots(dir)
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".generating"))
        .count()
}

/// A full disk fails appends with an error saying the disk is full and to
/// free space (not "corrupted", not "another command is running"); once
/// space is free the log opens with every acknowledged event, even after
/// opens tried while the disk was still full (which is how a zero-byte
/// `snap.*.generating` was left behind).
#[test]
fn disk_full_keeps_acknowledged_events() {
    let disk = Tmpfs::mount("1m");
    let dir = disk.path().join("log");
    let mut acknowledged: Vec<Envelope> = Vec::new();
    let full = {
        let log = SledLog::open(&dir).unwrap();
        let mut full = None;
        // 1 MiB holds a few hundred deploys at most: the bound only stops a
        // broken test from running forever.
        for i in 0..2_000u128 {
            for chunk in deploy(i).chunks(5) {
                match log.append_batch(chunk.to_vec()) {
                    Ok(outcomes) => acknowledged.extend(
                        chunk
                            .iter()
                            .zip(outcomes)
                            .map(|(e, o)| e.clone().into_envelope(o.seq())),
                    ),
                    Err(e) => {
                        full = Some(e);
                        break;
                    }
                }
            }
            if full.is_some() {
                break;
            }
        }
        full.expect("a 1 MiB disk fills up")
    };
    eprintln!("full: {full}");
    assert!(matches!(full, LogError::NoSpace { .. }), "{full:?}");
    assert!(full.to_string().contains("no space left"), "{full}");
    assert!(matches!(
        full.next_step(&dir),
        Some(NextStep::FreeSpace { .. })
    ));
    assert!(!acknowledged.is_empty());

    // Commands keep opening the log while space comes back a page at a time
    // (other files being removed). Each open fails for the same reason, never
    // as damage; one gets as far as sled writing its snapshot and leaves a
    // zero-byte `snap.*.generating`, which made every later open fail as
    // "corrupted" before issue 17. The next one opens.
    let mut leftovers = 0;
    let mut opened = false;
    for pages in 0..=256u64 {
        disk.remount(
            MsFlags::empty(),
            &format!("size={}", (1 << 20) + pages * 4096),
        );
        match SledLog::open(&dir) {
            Ok(_) => {
                opened = true;
                break;
            }
            Err(e) => assert!(matches!(e, LogError::NoSpace { .. }), "{e:?}"),
        }
        leftovers += generating(&dir);
    }
    assert!(opened, "the log opens once there is room");
    assert!(
        leftovers > 0,
        "no open left a partial snapshot: this test no longer reproduces the accident"
    );

    disk.remount(MsFlags::empty(), "size=64m");
    let log = SledLog::open(&dir).expect("the log opens once space is free");
    let stored = read_all(&log);
    assert!(stored.len() >= acknowledged.len());
    assert_eq!(stored[..acknowledged.len()], acknowledged[..]);
    let next = log.append_batch(deploy(9_000)).unwrap();
    assert_eq!(next[0].seq(), stored.len() as u64 + 1);
}

/// A crash (or a full disk) while sled writes a snapshot leaves a partial
/// `snap.*.generating` file or a cut snapshot; sled would read it as the
/// newest snapshot and call the log corrupted forever. The log opens with
/// every event, and appends go on.
#[test]
fn crash_mid_snapshot_leaves_the_log_readable() {
    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("original");
    let (written, _) = write_deploys(&original, 3);
    let snapshot = snapshots(&original).pop().expect("sled wrote a snapshot");
    let whole = std::fs::read(&snapshot).unwrap();
    let name = snapshot.file_name().unwrap().to_string_lossy().into_owned();
    // A later position than the real snapshot, so sled would pick it first.
    let later = "snap.7FFFFFFFFFFFFFFF";
    // (case, file written into sled's directory, its bytes).
    let cases: [(&str, String, &[u8]); 5] = [
        ("zero-byte .generating", format!("{later}.generating"), b""),
        (
            "half-written .generating",
            format!("{later}.generating"),
            &whole[..whole.len() / 2],
        ),
        (
            "whole .generating not yet renamed",
            format!("{name}.generating"),
            &whole,
        ),
        (
            "truncated snapshot",
            name.clone(),
            &whole[..whole.len() - 5],
        ),
        ("zero-byte snapshot", later.to_owned(), b""),
    ];
    for (case, file, bytes) in cases {
        let dir = base.path().join(case.replace(' ', "-"));
        copy_dir(&original, &dir);
        std::fs::write(dir.join("sled").join(file), bytes).unwrap();
        let log = SledLog::open(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(read_all(&log), written, "{case}");
        let more = log.append_batch(deploy(100)).unwrap();
        assert_eq!(more[0].seq(), written.len() as u64 + 1, "{case}");
        drop(log);
        let log = SledLog::open(&dir).unwrap_or_else(|e| panic!("{case}, reopened: {e}"));
        assert_eq!(log.last_seq(), written.len() as u64 + more.len() as u64);
    }
}

/// Damage at the end of the data (a bad sector, a torn write) or inside it:
/// opening says the log is damaged and to salvage it; salvage then recovers
/// every event but those whose bytes were damaged (regression: 64 bytes at
/// the end made it recover 0 of 252, because the snapshot pointed into
/// them; 64 bytes inside lost every later event once a command had opened
/// the log), says how many were lost, and changes nothing, so it can be run
/// again.
#[test]
fn damage_at_the_tail_is_salvaged() {
    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("original");
    let (written, last_batch) = write_deploys(&original, 10);
    assert!(written.len() >= 252);
    let db = std::fs::read(original.join("sled/db")).unwrap();
    let data_end = db.iter().rposition(|b| *b != 0).unwrap() + 1;
    // (bytes damaged, how far before the end of the data, events that may be
    // lost: the batches whose records hold the damaged bytes).
    for (len, before_end, may_lose) in [
        (64, 0, last_batch),
        (1, 0, last_batch),
        (64, 100, 2 * last_batch),
        (512, 0, 4 * last_batch),
        // In the middle: sled's recovery zeroes everything after the damage,
        // so the first open must keep what salvage needs.
        (64, data_end / 2, 2 * last_batch),
    ] {
        let case = format!("{len} bytes {before_end} before the end");
        let dir = base.path().join(case.replace(' ', "-"));
        copy_dir(&original, &dir);
        let mut bytes = db.clone();
        let end = data_end - before_end;
        for b in &mut bytes[end - len..end] {
            *b ^= 0xAA;
        }
        std::fs::write(dir.join("sled/db"), &bytes).unwrap();

        // What a user's next command meets first.
        match SledLog::open(&dir) {
            Ok(log) => {
                let read: Result<Vec<Envelope>, LogError> = log.read_all().unwrap().collect();
                if let Err(e) = read {
                    assert!(e.is_damage(), "{case}: {e}");
                }
            }
            Err(e) => {
                assert!(e.is_damage(), "{case}: {e:?}");
                let Some(NextStep::Salvage { dir: named }) = e.next_step(&dir) else {
                    panic!("{case}: no salvage advice for {e}");
                };
                assert_eq!(named, dir);
                assert!(
                    NextStep::Salvage { dir: named }
                        .to_string()
                        .contains("flotilla events --salvage")
                );
            }
        }

        let files_before = std::fs::read(dir.join("sled/db")).unwrap();
        let salvage = SledLog::salvage_dir(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        let recovered = salvage.events.len();
        eprintln!(
            "{case}: recovered {recovered} of {}, lost {}",
            written.len(),
            salvage.lost()
        );
        for event in &salvage.events {
            assert_eq!(
                event,
                &written[event.seq as usize - 1],
                "{case}: salvaged events are unchanged"
            );
        }
        assert!(
            recovered + may_lose >= written.len(),
            "{case}: recovered only {recovered} of {}",
            written.len()
        );
        assert_eq!(salvage.acknowledged, written.len() as u64);
        assert_eq!(salvage.lost(), (written.len() - recovered) as u64, "{case}");
        if recovered < written.len() {
            assert!(
                matches!(salvage.problems.first(), Some(LogError::Truncated { .. })),
                "{case}: {:?}",
                salvage.problems
            );
        }
        assert_eq!(
            std::fs::read(dir.join("sled/db")).unwrap(),
            files_before,
            "{case}: salvage changed the data file"
        );
        let again = SledLog::salvage_dir(&dir).unwrap();
        assert_eq!(again.events.len(), recovered, "{case}: salvage again");
    }
}

/// Damage that leaves a record decodable but different (one letter of a
/// name) is never salvaged as if it were the event: salvage returns only
/// events whose bytes sled's checksums vouch for, and counts the other as
/// lost.
#[test]
fn altered_record_is_not_salvaged() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("log");
    let (written, _) = write_deploys(&dir, 3);
    let db_path = dir.join("sled/db");
    let mut db = std::fs::read(&db_path).unwrap();
    let name = b"alice@laptop";
    // The newest copy: the last event of the last append, stored once.
    let at = db
        .windows(name.len())
        .rposition(|w| w == name)
        .expect("the actor's name is in the data file");
    db[at + name.len() - 1] = b'q';
    std::fs::write(&db_path, &db).unwrap();

    let err = SledLog::open(&dir).err();
    eprintln!("open: {err:?}");
    let salvage = SledLog::salvage_dir(&dir).unwrap();
    for event in &salvage.events {
        assert_eq!(
            event,
            &written[event.seq as usize - 1],
            "altered event salvaged"
        );
    }
    assert_eq!(
        salvage.lost(),
        (written.len() - salvage.events.len()) as u64
    );
    assert!(salvage.lost() >= 1, "the altered event is counted as lost");
}

/// Large appends (an import, a burst of reports) are stored by sled as blob
/// files beside its data file, and its recovery deletes the ones written
/// after damage; salvage still recovers every event after a command has
/// opened the damaged log.
#[test]
fn damage_under_large_appends_is_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let log = SledLog::open(dir.path()).unwrap();
        let mut batch = Vec::new();
        for i in 0..240u128 {
            batch.extend(deploy(i));
            if batch.len() >= 2_000 {
                log.append_batch(std::mem::take(&mut batch)).unwrap();
            }
        }
        log.append_batch(batch).unwrap();
        read_all(&log)
    };
    let blobs = std::fs::read_dir(dir.path().join("sled/blobs"))
        .unwrap()
        .count();
    assert!(blobs > 0, "large appends went to blob files");
    let db_path = dir.path().join("sled/db");
    let mut db = std::fs::read(&db_path).unwrap();
    let data_end = db.iter().rposition(|b| *b != 0).unwrap() + 1;
    for b in &mut db[data_end / 2..data_end / 2 + 64] {
        *b ^= 0xAA;
    }
    std::fs::write(&db_path, &db).unwrap();

    match SledLog::open(dir.path()) {
        Ok(log) => {
            let read: Result<Vec<Envelope>, LogError> = log.read_all().unwrap().collect();
            if let Err(e) = read {
                assert!(e.is_damage(), "{e}");
            }
        }
        Err(e) => assert!(e.is_damage(), "{e:?}"),
    }
    let salvage = SledLog::salvage_dir(dir.path()).unwrap();
    eprintln!(
        "{blobs} blobs: recovered {} of {}, lost {}",
        salvage.events.len(),
        written.len(),
        salvage.lost()
    );
    for event in &salvage.events {
        assert_eq!(event, &written[event.seq as usize - 1]);
    }
    assert!(
        salvage.lost() <= 2_100,
        "64 bytes cost at most the append they touched: {:?}",
        salvage.problems
    );
}

/// A log on a read-only file system is reported as not writable, with the
/// next step to make it writable (never "in use by another command", never
/// "corrupted"); salvage still reads every event from it.
#[test]
fn read_only_log_says_so_and_salvages() {
    let disk = Tmpfs::mount("16m");
    let dir = disk.path().join("log");
    let (written, _) = write_deploys(&dir, 2);
    disk.remount(MsFlags::MS_RDONLY, "");
    let err = SledLog::open(&dir).expect_err("a read-only log cannot be opened to write");
    eprintln!("read-only: {err}");
    assert!(matches!(err, LogError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("read-only"), "{err}");
    let step = err.next_step(&dir).expect("a next step");
    assert!(matches!(step, NextStep::MakeWritable { .. }), "{step:?}");
    assert!(!step.to_string().contains("wait"), "{step}");
    let chain = std::error::Error::source(&err).expect("the OS error is kept");
    assert!(chain.to_string().contains("Read-only"), "{chain}");

    let salvage = SledLog::salvage_dir(&dir).unwrap();
    assert_eq!(salvage.events, written);
    assert!(salvage.problems.is_empty(), "{:?}", salvage.problems);
    assert_eq!(salvage.lost(), 0);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_private(&path);
        } else {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}

/// The log's files are readable by their owner only (0600, directories
/// 0700), new or made by an older version with the default modes.
#[test]
fn log_files_are_private() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("log");
    write_deploys(&dir, 2);
    assert!(!snapshots(&dir).is_empty());
    assert_private(&dir);

    // A log made with 0755/0644, as before: the next open narrows it.
    fn widen(dir: &Path) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                widen(&path);
            } else {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
    }
    widen(&dir);
    drop(SledLog::open(&dir).unwrap());
    assert_private(&dir);
}

/// A log held by another process names that process, and the next step is
/// to wait for it.
#[test]
fn held_log_names_its_holder() {
    let base = tempfile::tempdir().unwrap();
    let first = SledLog::open(base.path()).unwrap();
    let err = SledLog::open(base.path()).expect_err("held");
    let step = err.next_step(base.path()).expect("a next step").to_string();
    assert!(
        step.contains(&format!("pid {}", std::process::id())),
        "{step}"
    );
    drop(first);
}

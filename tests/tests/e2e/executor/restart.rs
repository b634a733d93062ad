//! Crashes and shutdowns of the executor's container: SIGKILL (`docker kill`) and SIGTERM
//! (`docker stop`) in the middle of a step.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use flotilla_e2e::testapp;
use flotilla_events::Event;
use flotilla_protocol::subjects;
use flotilla_protocol::wire::{self, *};
use futures::StreamExt as _;

use super::harness::*;

/// An executor killed with SIGKILL in the middle of a step (waiting for a slow app to become
/// healthy) and started again finishes the job: one container, the job's events with the
/// same ids as before the crash, and the new version served through the proxy. Its heartbeats
/// name the host's containers and sealing key. SIGTERM mid-step lets the step finish, hands
/// the job back and exits cleanly; restarted, the executor finishes that job.
#[test]
fn executor_killed_mid_step_finishes_the_job_after_restart() {
    runtime().block_on(async {
        let h = Harness::up(1).await;
        let bin = testapp::build_static_binary().unwrap();
        let slow = testapp::build_and_push(
            &h.fleet,
            &bin,
            "testapp",
            "slow",
            "ENV APP_MODE=healthy-after:8",
        )
        .unwrap();
        let job = deploy_job(&h.agents[0], &slow, "slow", 60_000);
        h.publish(&h.agents[0].host, h.sign(&job), &job.id).await;

        let deadline = Instant::now() + WAIT;
        while !h
            .events_of(&job.id)
            .iter()
            .any(|e| e.event.event.type_name() == "ContainerStarted")
        {
            assert!(
                Instant::now() < deadline,
                "no ContainerStarted\n{}",
                h.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let first_started = h.events_of(&job.id)[1].event.id;
        assert_eq!(
            h.agents[0].kill_executor(),
            "137",
            "killed (SIGKILL), not exited"
        );
        assert!(
            !h.events_of(&job.id).iter().any(|e| e.step.is_none()),
            "killed before it finished"
        );

        h.agents[0].start_executor();
        let events = h.finished(&job.id).await;
        let last = events.last().unwrap();
        assert_eq!(
            last.event.event.type_name(),
            "HostSucceeded",
            "{events:?}\n{}",
            h.logs()
        );
        let started: HashSet<_> = events
            .iter()
            .filter(|e| e.event.event.type_name() == "ContainerStarted")
            .map(|e| e.event.id)
            .collect();
        assert_eq!(
            started,
            HashSet::from([first_started]),
            "the rerun reports the same event id"
        );
        let host = h.agents[0].host.clone();
        let names = h.docker(
            &host,
            &[
                "ps",
                "-a",
                "--filter",
                "label=service=testapp",
                "--format",
                "{{.Names}} {{.State}}",
            ],
        );
        assert_eq!(names, "testapp-web-slow running");
        assert_eq!(version_via_proxy(&host), "slow");

        // Heartbeats say who is there: versions and the managed containers (never a key:
        // keys come from enrolment).
        let mut beats = h
            .client
            .subscribe(subjects::heartbeat_subject(&host.addr.to_string()))
            .await
            .unwrap();
        let beat = tokio::time::timeout(Duration::from_secs(10), beats.next())
            .await
            .expect("a heartbeat within 10s")
            .unwrap();
        let beat: Heartbeat = wire::decode(&beat.payload).unwrap();
        assert_eq!(beat.host, host.addr.to_string());
        assert!(!beat.docker_version.is_empty());
        assert_eq!(beat.containers, ["testapp-web-slow"]);

        // SIGTERM in the middle of a step: the step finishes (the switch to the slow app
        // completes), the job is handed back, the executor exits cleanly; restarted, it
        // finishes the job.
        let slow2 = testapp::build_and_push(
            &h.fleet,
            &bin,
            "testapp",
            "slow2",
            "ENV APP_MODE=healthy-after:6",
        )
        .unwrap();
        let job3 = deploy_job(&h.agents[0], &slow2, "slow2", 60_000);
        h.publish(&host, h.sign(&job3), &job3.id).await;
        let deadline = Instant::now() + WAIT;
        while !h
            .events_of(&job3.id)
            .iter()
            .any(|e| e.event.event.type_name() == "ContainerStarted")
        {
            assert!(
                Instant::now() < deadline,
                "no ContainerStarted\n{}",
                h.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = h.agents[0].stop_executor();
        assert_eq!(status, "0", "exit after SIGTERM\n{}", h.logs());
        let log = h.agents[0].log();
        assert!(
            log.contains("job handed back before this step") && log.contains("executor stopped"),
            "{log}"
        );
        // Published (and stored) before the exit; our subscriber may see them a moment later.
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.events_of(&job3.id).len() < 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let so_far = types(&h.events_of(&job3.id));
        assert_eq!(
            so_far,
            [
                "ImagePulled",
                "ContainerStarted",
                "HealthPassed",
                "ProxySwitched"
            ],
            "the step in flight finished, no more"
        );
        assert_eq!(version_via_proxy(&host), "slow2");
        h.agents[0].start_executor();
        let events = h.finished(&job3.id).await;
        assert_eq!(
            events.last().unwrap().event.event.type_name(),
            "HostSucceeded",
            "{}",
            h.logs()
        );
        assert!(events.iter().any(|e| e.event.event
            == Event::OldContainerStopped(flotilla_events::event::OldContainerStopped {
                name: "testapp-web-slow".into()
            })));
        let names = h.docker(
            &host,
            &[
                "ps",
                "--filter",
                "label=service=testapp",
                "--format",
                "{{.Names}}",
            ],
        );
        assert_eq!(names, "testapp-web-slow2");

        // SIGTERM between jobs: a clean exit.
        let status = h.agents[0].stop_executor();
        assert_eq!(status, "0", "exit after SIGTERM\n{}", h.logs());
    });
}

//! `proxy boot|reboot|start|stop|restart|remove` planned as the steps every host's executor
//! runs on the `flotilla-proxy` container.
#![allow(clippy::unwrap_used)]

use flotilla_deploy::config::{LoadOptions, load};
use flotilla_deploy::plan::Step;
use flotilla_events::MemoryLog;
use flotilla_events::event::{Operation, ProxyAction};
use flotilla_scheduler::procedure::plans::{Narrow, PlanError, operation_plan};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn planned(action: ProxyAction, narrow: &Narrow) -> Result<flotilla_deploy::plan::Plan, PlanError> {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/tests/fixtures/plan_roles_tags");
    let config = load(&LoadOptions {
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        ..LoadOptions::new(root)
    })
    .unwrap();
    operation_plan(
        &config,
        &MemoryLog::new(),
        &Operation::Proxy { action },
        narrow,
        &Default::default(),
    )
}

/// `proxy restart` stops the proxy (with its drain time) then starts the same container on
/// every host; `-h` narrows it to one host; `remove` takes the proxy's container and a
/// hand-over's leftover successor.
#[test]
fn start_stop_restart_remove_are_planned_on_every_host() {
    let plan = planned(ProxyAction::Restart, &Narrow::default()).unwrap();
    let hosts: Vec<&str> = plan.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let stop = Step::StopProxy {
        container: "flotilla-proxy".into(),
        stop_timeout_s: 40,
    };
    let start = Step::StartProxy {
        container: "flotilla-proxy".into(),
    };
    assert!(
        plan.hosts
            .iter()
            .all(|h| h.steps == [stop.clone(), start.clone()])
    );

    let one = Narrow {
        hosts: vec!["10.0.0.2".into()],
        ..Narrow::default()
    };
    let stopped = planned(ProxyAction::Stop, &one).unwrap();
    assert_eq!(stopped.hosts.len(), 1);
    assert_eq!(stopped.hosts[0].host, "10.0.0.2");
    assert_eq!(stopped.hosts[0].steps, [stop]);

    let removed = planned(ProxyAction::Remove, &Narrow::default()).unwrap();
    assert_eq!(
        removed.hosts[0].steps,
        [
            Step::RemoveContainer {
                container: "flotilla-proxy".into()
            },
            Step::RemoveContainer {
                container: "flotilla-proxy-next".into()
            },
        ]
    );
}

/// `proxy boot`, `reboot` and `reboot --rolling` are one `ReplaceProxy` step per host with
/// that host's `proxy.run` (Kamal's defaults here: ports 80 and 443); only `boot` leaves a
/// current proxy alone.
#[test]
fn boot_and_reboot_replace_the_proxy_with_each_hosts_settings() {
    for (action, boot) in [
        (ProxyAction::Boot, true),
        (ProxyAction::Reboot, false),
        (ProxyAction::RebootRolling, false),
    ] {
        let plan = planned(action, &Narrow::default()).unwrap();
        assert_eq!(plan.hosts.len(), 3);
        let want = Step::ReplaceProxy {
            container: "flotilla-proxy".into(),
            run: flotilla_protocol::proxy_run::ProxyRun::default(),
            boot,
        };
        assert!(
            plan.hosts.iter().all(|h| h.steps == [want.clone()]),
            "{action:?}"
        );
    }
}

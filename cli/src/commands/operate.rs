//! Kamal's state-changing commands that the hosts' executors run (`app start|stop|remove|
//! maintenance|live`, `app stale_containers --stop`, `prune containers|images|all`,
//! `accessory boot|reboot|upgrade|start|stop|restart|remove`, `proxy boot|reboot|
//! start|stop|restart|remove`): planned by
//! `scheduler::procedure::plans::operation_plan`, sent as
//! signed jobs and recorded in the event log like a deploy, by this process in embedded mode
//! or by the scheduler service in service mode, so both histories have them. Kamal's `-h`,
//! `-r`, `-p` narrow the plan; `--json` prints its events as `deploy --json` does.

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{self, Targets};
use crate::rollout::{self, FleetArgs, Session};
use flotilla_deploy::plan::AccessoryFiles;
use flotilla_events::DeployId;
use flotilla_events::event::{AccessoryAction, Operation, ProxyAction};
use flotilla_protocol::control::RolloutKind;
use flotilla_scheduler::procedure::OperationRequest;
use flotilla_scheduler::procedure::plans;
use std::path::PathBuf;

/// Runs `operation` on the hosts `targets` picks.
pub async fn run(
    config: &ConfigArgs,
    targets: &Targets,
    json: bool,
    operation: Operation,
) -> anyhow::Result<()> {
    run_with_files(config, targets, json, operation, AccessoryFiles::new()).await
}

/// Runs `operation` with `files`, an accessory's rendered `files:` (sealed to the service's
/// key in service mode).
pub async fn run_with_files(
    config: &ConfigArgs,
    targets: &Targets,
    json: bool,
    operation: Operation,
    files: AccessoryFiles,
) -> anyhow::Result<()> {
    let fleet = FleetArgs {
        config: config.clone(),
        hosts: targets.hosts.clone(),
        roles: targets.roles.clone(),
        primary: targets.primary,
        // Kamal runs no hooks around these.
        skip_hooks: true,
        lock_wait: None,
        json,
        quiet: false,
        verbose: false,
        log: std::env::var_os("FLOTILLA_EVENT_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".flotilla/events")),
        help: None,
    };
    let config = crate::session::load_config(&fleet)?;
    let narrow = crate::commands::deploy::narrow(&fleet);
    if crate::client::service_mode(&config) {
        // Checked here too, so a filter that picks nothing fails before anything is asked;
        // the service plans again from its own log.
        let plan = plans::operation_plan(
            &config,
            &flotilla_events::MemoryLog::new(),
            &planned_here(&operation),
            &narrow,
            &files,
        )
        .map_err(rollout::plan_error)?;
        if plan.hosts.is_empty() {
            return Err(fanout::no_hosts().into());
        }
        let kind = match operation {
            Operation::Accessory { .. } => RolloutKind::Accessory {
                operation: operation.clone(),
                // Sealed to the service's key once the request knows it.
                files: Vec::new(),
            },
            _ => RolloutKind::Operation {
                operation: operation.clone(),
            },
        };
        let command = command(&operation);
        return crate::client::ask_rollout(
            &config,
            &fleet,
            kind,
            DeployId::new(),
            vec![],
            command,
            files,
        )
        .await;
    }
    let s = Session::open_with(&fleet, config)?;
    let plan = plans::operation_plan(&s.config, &s.log, &operation, &narrow, &files)
        .map_err(rollout::plan_error)?;
    if plan.hosts.is_empty() {
        return Err(fanout::no_hosts().into());
    }
    let req = OperationRequest {
        plan,
        operation,
        deploy_id: DeployId::new(),
    };
    rollout::run_operation(&s, req).await
}

/// The operation as this machine can plan it without the service's log: `app start` of an
/// unknown version still has hosts to check the filters against.
fn planned_here(operation: &Operation) -> Operation {
    match operation {
        Operation::AppStart { version: None } => Operation::AppStart {
            version: Some(String::new()),
        },
        other => other.clone(),
    }
}

/// The command's name in the summary line.
fn command(operation: &Operation) -> &'static str {
    match operation {
        Operation::AppStart { .. } => "app start",
        Operation::AppStop => "app stop",
        Operation::AppRemove => "app remove",
        Operation::Prune { .. } => "prune",
        Operation::AppMaintenance { .. } => "app maintenance",
        Operation::AppLive => "app live",
        Operation::StaleContainersStop => "app stale_containers --stop",
        Operation::Accessory { action, .. } => match action {
            AccessoryAction::Boot => "accessory boot",
            AccessoryAction::Reboot => "accessory reboot",
            AccessoryAction::Start => "accessory start",
            AccessoryAction::Stop => "accessory stop",
            AccessoryAction::Restart => "accessory restart",
            AccessoryAction::Remove => "accessory remove",
            AccessoryAction::Upgrade => "accessory upgrade",
        },
        Operation::Proxy { action } => match action {
            ProxyAction::Boot => "proxy boot",
            ProxyAction::Reboot => "proxy reboot",
            ProxyAction::RebootRolling => "proxy reboot --rolling",
            ProxyAction::Start => "proxy start",
            ProxyAction::Stop => "proxy stop",
            ProxyAction::Restart => "proxy restart",
            ProxyAction::Remove => "proxy remove",
        },
    }
}

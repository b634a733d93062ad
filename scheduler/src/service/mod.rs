//! `flotilla scheduler run`: the scheduler as a service on the control host. It owns the event
//! log, answers the CLI's requests on `flotilla.req.<verb>` (see
//! `flotilla_protocol::control`) by running the same [`crate::procedure`] library the
//! embedded mode runs, and publishes every appended event to `FLOTILLA_LOG` once it is
//! durable, which is how clients follow a deploy and how any machine reads the one history.
//!
//! Rollouts run on a [`LocalSet`]: the procedure's watcher is a plain `FnMut`, so a rollout
//! is not `Send`; the service's work is waiting on NATS, which one thread does well. A
//! rollout outlives the request that started it: a client that goes away changes nothing.
//! Stopping the service (SIGTERM) cancels each running rollout the way Ctrl-C of the CLI
//! did (no host starts, running steps finish, `DeployCancelled`, the lock released) and
//! returns when every event is on the stream; `flotilla replay ID --resume` continues.

mod follower;
pub mod ha;
pub mod interrupted;
pub mod lease;
mod publisher;
mod ready;

use crate::enrolment::{self, Decision};
use crate::procedure::{
    self, Context, HEARTBEAT_WAIT, OperationRequest, PlanError, ProcedureError,
    Request as ProcedureRequest, plans,
};
use crate::stored::Stored;
use crate::transport::{Transport, answered};
use flotilla_deploy::Config;
use flotilla_deploy::config::{ConfigErrors, RenderedFile, Secret, Secrets};
use flotilla_events::event::DeployKind;
use flotilla_events::{DeployId, Enrolled, Envelope, EventLog, LogError};
use flotilla_protocol::control::{
    self, EVENTS_PAGE, Request, Response, Rollout, RolloutKind, Running,
};
use flotilla_protocol::identity::PublicIdentity;
use flotilla_protocol::sealing::{HostKey, SealError};
use flotilla_protocol::signing::JobSigner;
use flotilla_protocol::text::error_chain;
use flotilla_protocol::wire::{self, WireError};
use futures::StreamExt;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::LocalSet;
use tokio_util::sync::CancellationToken;

pub use publisher::published_through;

/// The service failed as a whole (a refused request is an answer, not this).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("subscribing to the request subjects")]
    Subscribe(#[source] async_nats::SubscribeError),
    #[error("creating the {stream} stream")]
    Stream {
        stream: &'static str,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    #[error("publishing the event log to FLOTILLA_LOG")]
    Publish(#[source] publisher::PublishError),
    #[error("reaching NATS")]
    Flush(#[source] async_nats::client::FlushError),
    #[error("event log")]
    Log(#[from] LogError),
    #[error("opening the {} bucket", control::ROLLOUT_BUCKET)]
    Rollouts(#[source] async_nats::jetstream::context::KeyValueError),
}

/// What the service runs with.
pub struct Service<T: Transport + Clone + 'static> {
    /// The fleet: jobs, reports, heartbeats, the deploy lock.
    pub transport: T,
    /// The one event log (the service is its only writer).
    pub log: Arc<dyn EventLog>,
    /// Signs jobs: the key executors were enrolled with.
    pub signer: Arc<JobSigner>,
    /// Opens the secrets clients seal to the service.
    pub key: Arc<HostKey>,
    /// Requests in, log stream out.
    pub client: async_nats::Client,
    /// Where rollouts run hooks from: the service has no project directory, so none are
    /// found there (see ARCHITECTURE.md: hooks in service mode).
    pub root: PathBuf,
    /// This machine, for `flotilla lock status`.
    pub machine: String,
    /// Every appended event is also handed here (the service's `/metrics`).
    pub observe: Arc<dyn Fn(&Envelope) + Send + Sync>,
}

/// A rollout in progress: what `Status` lists, and how `Cancel` and shutdown reach it.
struct Active {
    running: Running,
    cancel: CancellationToken,
}

/// The rollouts running here, and where they are kept for a scheduler taking over.
struct Shared {
    active: RefCell<BTreeMap<DeployId, Active>>,
    /// [`control::ROLLOUT_BUCKET`]: each running rollout as asked, until it ends.
    rollouts: async_nats::jetstream::kv::Store,
    /// How far `FLOTILLA_LOG` holds the log: rollouts act only on what it holds.
    stored: Stored,
}

type Table = Rc<Shared>;

/// How long a new leader keeps asking for the rollouts to resume, and keeps trying to start
/// them, when NATS does not answer (requests routed to a lost node time out until the cluster
/// notices it is gone, and a bucket it led answers only after its re-election).
const RESUME_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long it waits between two asks meanwhile.
const RESUME_READ_RETRY: std::time::Duration = std::time::Duration::from_millis(500);
/// How long one read of the rollouts bucket waits for its answer: a bucket read is a direct
/// get, answered by any of the stream's replicas, so until the cluster notices the lost node
/// some go to it and are never answered. At the client's 5 s timeout one such read held a
/// fleet failover 10 s; a live replica answers in milliseconds.
const RESUME_READ_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(1);

/// Asks `read` of the rollouts bucket until it answers or `deadline` passes, each ask given
/// [`RESUME_READ_ATTEMPT`] and [`RESUME_READ_RETRY`] between them; `None` (logged) when it
/// never answered.
async fn read_until<T, E, F>(
    deadline: tokio::time::Instant,
    what: &'static str,
    mut read: impl FnMut() -> F,
) -> Option<T>
where
    E: std::error::Error + 'static,
    F: std::future::Future<Output = Result<T, E>>,
{
    loop {
        match answered(1, RESUME_READ_ATTEMPT, control::ROLLOUT_BUCKET, &mut read).await {
            Ok(answer) => return Some(answer),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "{what}; asking again");
                tokio::time::sleep(RESUME_READ_RETRY).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what}");
                return None;
            }
        }
    }
}

impl<T: Transport + Clone + 'static> Service<T> {
    /// Makes sure `FLOTILLA_LOG` exists and subscribes to the requests: once this returns,
    /// requests are queued for [`Bound::serve`], so a client may ask at once.
    pub async fn bind(self) -> Result<Bound<T>, ServiceError> {
        let js = async_nats::jetstream::new(self.client.clone());
        js.get_or_create_stream(crate::transport::bus::replicated(
            &js,
            &control::log_stream(),
        ))
        .await
        .map_err(|source| ServiceError::Stream {
            stream: control::LOG_STREAM,
            source,
        })?;
        js.get_or_create_stream(crate::transport::bus::replicated(
            &js,
            &control::rollout_bucket_stream(),
        ))
        .await
        .map_err(|source| ServiceError::Stream {
            stream: control::ROLLOUT_BUCKET,
            source,
        })?;
        let rollouts = js
            .get_key_value(control::ROLLOUT_BUCKET)
            .await
            .map_err(ServiceError::Rollouts)?;
        let requests = self
            .client
            .subscribe(control::all_requests())
            .await
            .map_err(ServiceError::Subscribe)?;
        self.client.flush().await.map_err(ServiceError::Flush)?;
        Ok(Bound {
            service: self,
            requests,
            js,
            rollouts,
        })
    }
}

/// A service subscribed to its requests, not yet answering them.
pub struct Bound<T: Transport + Clone + 'static> {
    service: Service<T>,
    requests: async_nats::Subscriber,
    js: async_nats::jetstream::Context,
    rollouts: async_nats::jetstream::kv::Store,
}

impl<T: Transport + Clone + 'static> Bound<T> {
    /// Serves until `shutdown` fires, then cancels running rollouts, waits for them to end and
    /// for the log stream to have every event.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let Bound {
            service,
            mut requests,
            js,
            rollouts,
        } = self;
        let stop_publishing = CancellationToken::new();
        // Dropping the service (a leader that lost its lease) stops its publishing too.
        let _stop_on_drop = stop_publishing.clone().drop_guard();
        let (stored_tx, stored) = crate::stored::channel(0);
        let publisher = tokio::spawn(publisher::run(
            service.log.clone(),
            js,
            service.observe.clone(),
            stored_tx,
            stop_publishing.clone(),
        ));
        let service = Rc::new(service);
        let table: Table = Rc::new(Shared {
            active: RefCell::default(),
            rollouts,
            stored,
        });
        let local = LocalSet::new();
        local
            .run_until(async {
                // Rollouts a previous scheduler left running (it crashed, or its host was
                // lost and this one took over): resumed from the log, each host from its
                // first unfinished step.
                service.clone().resume_interrupted(&table).await;
                loop {
                    tokio::select! {
                        message = requests.next() => {
                            let Some(message) = message else { break };
                            let service = service.clone();
                            let table = table.clone();
                            tokio::task::spawn_local(async move {
                                service.answer(message, &table).await;
                            });
                        }
                        () = shutdown.cancelled() => break,
                    }
                }
                drop(requests);
                for active in table.active.borrow().values() {
                    active.cancel.cancel();
                }
            })
            .await;
        // The rollouts end through their cancel semantics; the local set drives them home.
        local.await;
        stop_publishing.cancel();
        match publisher.await {
            Ok(result) => result.map_err(ServiceError::Publish),
            Err(join) => {
                tracing::error!(error = %join, "the log publisher stopped");
                Ok(())
            }
        }
    }
}

impl<T: Transport + Clone + 'static> Service<T> {
    /// Answers one request message (a message without a reply subject is dropped).
    async fn answer(self: Rc<Self>, message: async_nats::Message, table: &Table) {
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let response = match wire::decode::<Request>(&message.payload) {
            Ok(request) => self.clone().handle(request, table).await,
            Err(e) => refused(&e, None),
        };
        let bytes = match wire::encode(&response) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "encoding a response");
                return;
            }
        };
        if let Err(e) = self.client.publish(reply, bytes.into()).await {
            tracing::warn!(error = %e, "answering a request");
        }
    }

    async fn handle(self: Rc<Self>, request: Request, table: &Table) -> Response {
        match request {
            Request::Key => Response::Key {
                public: self.key.public_key_base64(),
            },
            Request::Status => Response::Status {
                running: table
                    .active
                    .borrow()
                    .values()
                    .map(|a| a.running.clone())
                    .collect(),
            },
            Request::Cancel { deploy_id } => match table.active.borrow().get(&deploy_id) {
                Some(active) => {
                    active.cancel.cancel();
                    Response::Done
                }
                None => Response::Refused {
                    reason: format!("deploy {deploy_id} is not running here"),
                    hint: Some("see `flotilla history`".into()),
                },
            },
            Request::Events { deploy_id, from } => self.events(deploy_id.as_ref(), from),
            Request::Rollout(rollout) => self.start(*rollout, table).await,
            Request::Enroll(enrolment) => self.enroll(&enrolment),
        }
    }

    /// Records a host's identity the CLI read over its pinned SSH connection, by the same
    /// rule as ever: a new host is enrolled, the same keys record nothing, changed keys are
    /// refused unless the operator said `--replace`.
    fn enroll(&self, e: &control::Enrolment) -> Response {
        let identity = match PublicIdentity::parse(&e.identity) {
            Ok(i) => i,
            Err(err) => return refused(&err, None),
        };
        let enrolled = match Enrolled::from_log(self.log.as_ref()) {
            Ok(en) => en,
            Err(err) => return refused(&err, None),
        };
        match enrolment::decide(&enrolled, &e.host, &e.ssh_host_key, &identity, e.replace) {
            Ok(Decision::Unchanged) => Response::Enrolled { signing_key: None },
            Ok(Decision::Enrol(record)) => {
                let signing_key = record.signing_key.clone();
                match self.log.append(enrolment::event(&e.host, &e.actor, record)) {
                    Ok(_) => Response::Enrolled {
                        signing_key: Some(signing_key),
                    },
                    Err(err) => refused(&err, None),
                }
            }
            Err(changed) => refused(&changed, Some(changed.accept_command())),
        }
    }

    /// Resumes every rollout [`control::ROLLOUT_BUCKET`] still holds: one that ended (or
    /// never recorded anything) is refused by the resume plan and forgotten. An app
    /// operation left open is not run again but finished ([`interrupted::finish_operation`]).
    async fn resume_interrupted(self: Rc<Self>, table: &Table) {
        // Just after a failover the cluster may still route a read to the lost node until
        // it notices the loss (a few seconds): a read that fails is asked again, for a
        // while, rather than leaving a rollout unresumed.
        let deadline = tokio::time::Instant::now() + RESUME_READ_WAIT;
        let list = || async {
            let keys = table.rollouts.keys().await?;
            Ok::<Vec<String>, async_nats::jetstream::kv::WatchError>(
                keys.filter_map(|k| async { k.ok() }).collect().await,
            )
        };
        let Some(keys) = read_until(deadline, "listing interrupted rollouts", list).await else {
            return;
        };
        for key in keys {
            let get = || table.rollouts.get(&key);
            let Some(Some(stored)) =
                read_until(deadline, "reading an interrupted rollout", get).await
            else {
                continue;
            };
            let mut rollout: Rollout = match wire::decode(&stored) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, key, "an interrupted rollout does not decode");
                    let _ = table.rollouts.delete(&key).await;
                    continue;
                }
            };
            if let Some(operation) = rollout.kind.operation() {
                let id = &rollout.deploy_id;
                match interrupted::finish_operation(
                    self.log.as_ref(),
                    &self.transport,
                    &rollout,
                    operation,
                )
                .await
                {
                    Ok(finished) => {
                        tracing::info!(deploy = %id, ?finished, "an interrupted operation")
                    }
                    // Kept in the bucket: the next scheduler to lead tries again.
                    Err(e) => {
                        tracing::warn!(deploy = %id, error = %e, "finishing an interrupted operation");
                        continue;
                    }
                }
                let _ = table.rollouts.delete(&key).await;
                continue;
            }
            rollout.kind = RolloutKind::Resume;
            let id = rollout.deploy_id.clone();
            loop {
                match self.clone().start_rollout(rollout.clone(), table).await {
                    Started::Accepted(_) => {
                        tracing::info!(deploy = %id, "resumed an interrupted rollout");
                    }
                    Started::Unreachable(answer) if tokio::time::Instant::now() < deadline => {
                        tracing::warn!(deploy = %id, ?answer, "resuming a rollout; asking again");
                        tokio::time::sleep(RESUME_READ_RETRY).await;
                        continue;
                    }
                    // Kept in the bucket: the next scheduler to lead tries again.
                    Started::Unreachable(answer) => {
                        tracing::warn!(deploy = %id, ?answer, "could not resume a rollout");
                    }
                    Started::Refused(answer) => {
                        tracing::info!(deploy = %id, ?answer, "nothing to resume");
                        let _ = table.rollouts.delete(&key).await;
                    }
                }
                break;
            }
        }
    }

    /// A page of the log, one deploy's or all.
    fn events(&self, deploy_id: Option<&DeployId>, from: u64) -> Response {
        let read = || -> Result<Response, LogError> {
            let mut events = Vec::new();
            for event in self.log.read_from(from.max(1))? {
                let event = event?;
                if deploy_id.is_some_and(|id| &event.deploy_id != id) {
                    continue;
                }
                if events.len() == EVENTS_PAGE {
                    return Ok(Response::Events {
                        events,
                        next: Some(event.seq),
                    });
                }
                events.push(event);
            }
            Ok(Response::Events { events, next: None })
        };
        read().unwrap_or_else(|e| refused(&e, None))
    }

    /// Starts a rollout; answers once it holds the deploy lock and its first event is in the
    /// log (so a client following the log sees all of it), or with why it could not start.
    async fn start(self: Rc<Self>, rollout: Rollout, table: &Table) -> Response {
        match self.start_rollout(rollout, table).await {
            Started::Accepted(deploy_id) => Response::Accepted { deploy_id },
            Started::Refused(answer) | Started::Unreachable(answer) => answer,
        }
    }

    /// [`Service::start`], telling a refusal from NATS not answering (worth asking again).
    async fn start_rollout(self: Rc<Self>, rollout: Rollout, table: &Table) -> Started {
        if table.active.borrow().contains_key(&rollout.deploy_id) {
            return Started::Refused(Response::Refused {
                reason: format!("deploy {} is already running", rollout.deploy_id),
                hint: Some(format!(
                    "follow it with `flotilla replay {} --follow`",
                    rollout.deploy_id
                )),
            });
        }
        let prepared = match self.prepare(&rollout) {
            Ok(p) => p,
            Err(e) => return Started::Refused(e.response()),
        };
        // Kept before anything runs, so a scheduler taking over can resume it.
        let key = flotilla_protocol::subjects::token(rollout.deploy_id.as_str());
        match wire::encode(&rollout) {
            Ok(bytes) => {
                if let Err(e) = table.rollouts.put(&key, bytes.into()).await {
                    tracing::warn!(error = %e, "keeping the rollout for a takeover");
                }
            }
            Err(e) => tracing::warn!(error = %e, "encoding the rollout for a takeover"),
        }
        let cancel = CancellationToken::new();
        table.active.borrow_mut().insert(
            rollout.deploy_id.clone(),
            Active {
                running: Running {
                    deploy_id: rollout.deploy_id.clone(),
                    command: prepared.request.command(),
                    actor: rollout.actor.clone(),
                },
                cancel: cancel.clone(),
            },
        );
        let (started_tx, started) = oneshot::channel::<Started>();
        let service = self.clone();
        let table = table.clone();
        // A resume that NATS did not let start stays in the bucket: it is tried again.
        let resuming = matches!(rollout.kind, RolloutKind::Resume);
        tokio::task::spawn_local(async move {
            let id = prepared.request.deploy_id().clone();
            let unreachable = service
                .run_rollout(prepared, rollout, started_tx, &cancel, &table.stored)
                .await;
            table.active.borrow_mut().remove(&id);
            if unreachable && resuming {
                return;
            }
            let key = flotilla_protocol::subjects::token(id.as_str());
            if let Err(e) = table.rollouts.delete(&key).await {
                tracing::warn!(error = %e, "forgetting an ended rollout");
            }
        });
        match started.await {
            Ok(started) => started,
            Err(_) => Started::Refused(Response::Refused {
                reason: "the rollout ended before it started".into(),
                hint: None,
            }),
        }
    }

    /// An accessory operation's files, opened with the service's key.
    fn open_files(
        &self,
        files: &[flotilla_protocol::control::SealedAccessoryFile],
    ) -> Result<flotilla_deploy::plan::AccessoryFiles, StartError> {
        let mut out = flotilla_deploy::plan::AccessoryFiles::new();
        for f in files {
            let opened = self
                .key
                .open_bytes(&f.contents)
                .map_err(|source| StartError::Secret {
                    name: format!("accessory {} file {}", f.accessory, f.local),
                    source,
                })?;
            out.entry(f.accessory.clone()).or_default().insert(
                f.local.clone(),
                flotilla_deploy::plan::FileContents::new(opened.as_slice()),
            );
        }
        Ok(out)
    }

    /// The config, secrets and plan of a rollout, decided before anything runs.
    fn prepare(&self, rollout: &Rollout) -> Result<Prepared, StartError> {
        let mut secrets = Vec::with_capacity(rollout.secrets.len());
        for (name, sealed) in &rollout.secrets {
            let opened = self.key.open(sealed).map_err(|source| StartError::Secret {
                name: name.clone(),
                source,
            })?;
            secrets.push((name.clone(), Secret::new(opened.expose())));
        }
        let files: Vec<RenderedFile> = rollout
            .config
            .iter()
            .map(|f| RenderedFile {
                path: PathBuf::from(&f.path),
                text: f.text.clone(),
            })
            .collect();
        let config = flotilla_deploy::config::load_rendered(
            &files,
            rollout.destination.as_deref(),
            Secrets::from_values(secrets),
        )
        .map_err(StartError::Config)?;
        let narrow = plans::Narrow {
            hosts: rollout.hosts.clone(),
            roles: rollout.roles.clone(),
            primary: rollout.primary,
        };
        let log = self.log.as_ref();
        let id = rollout.deploy_id.clone();
        let request = match &rollout.kind {
            RolloutKind::Deploy { version } | RolloutKind::Redeploy { version } => {
                Planned::Rollout(ProcedureRequest {
                    plan: plans::deploy_plan(&config, log, version, &narrow)?,
                    kind: DeployKind::Deploy,
                    deploy_id: id,
                    resume: false,
                    preamble: rollout.preamble.clone(),
                    command: match rollout.kind {
                        RolloutKind::Redeploy { .. } => "redeploy",
                        _ => "deploy",
                    },
                })
            }
            RolloutKind::Rollback { version } => {
                let (plan, started) =
                    plans::rollback_plan(&config, log, version.as_deref(), &narrow)?;
                Planned::Rollout(ProcedureRequest {
                    plan,
                    kind: DeployKind::Rollback,
                    deploy_id: id,
                    resume: false,
                    preamble: vec![started.into()],
                    command: "rollback",
                })
            }
            RolloutKind::Resume => {
                let (plan, kind) = plans::resume_plan(&config, log, id.as_str())?;
                Planned::Rollout(ProcedureRequest {
                    plan,
                    kind,
                    deploy_id: id,
                    resume: true,
                    preamble: Vec::new(),
                    command: "resume",
                })
            }
            RolloutKind::Operation { operation } => Planned::Operation(OperationRequest {
                plan: plans::operation_plan(&config, log, operation, &narrow, &Default::default())?,
                operation: operation.clone(),
                deploy_id: id,
            }),
            RolloutKind::Accessory { operation, files } => {
                let files = self.open_files(files)?;
                Planned::Operation(OperationRequest {
                    plan: plans::operation_plan(&config, log, operation, &narrow, &files)?,
                    operation: operation.clone(),
                    deploy_id: id,
                })
            }
        };
        Ok(Prepared { config, request })
    }

    /// Runs one rollout to its end; `started` hears when its first event is recorded, or
    /// why it stopped before (the lock held, a plan that failed). It acts only on events
    /// `stored` says `FLOTILLA_LOG` holds.
    async fn run_rollout(
        &self,
        prepared: Prepared,
        rollout: Rollout,
        started: oneshot::Sender<Started>,
        cancel: &CancellationToken,
        stored: &Stored,
    ) -> bool {
        let ctx = Context {
            config: &prepared.config,
            root: &self.root,
            log: self.log.as_ref(),
            transport: &self.transport,
            signer: &self.signer,
            actor: rollout.actor.clone(),
            machine: rollout.machine.clone(),
            // No project directory here: the hooks stay on the operator's machine.
            skip_hooks: true,
            lock_wait: rollout.lock_wait_ms.map(std::time::Duration::from_millis),
            heartbeat_wait: HEARTBEAT_WAIT,
            notices: &|notice| tracing::info!(%notice, "rollout waiting"),
            stored: Some(stored),
        };
        let mut started = Some(started);
        let accepted = rollout.deploy_id.clone();
        let mut watch = |_: &Envelope| {
            if let Some(tx) = started.take() {
                let _ = tx.send(Started::Accepted(accepted.clone()));
            }
        };
        let result = match &prepared.request {
            Planned::Rollout(req) => procedure::run(&ctx, req, &mut watch, cancel).await,
            Planned::Operation(req) => procedure::operate(&ctx, req, &mut watch, cancel).await,
        };
        let id = prepared.request.deploy_id();
        match (result, started.take()) {
            (Err(e), Some(tx)) => {
                let answer = refused(&e, procedure_hint(&e));
                // The lock bucket not answering (a NATS node lost just now) is not a refusal.
                let unreachable = matches!(
                    e,
                    ProcedureError::Lock(crate::transport::lock::LockError::Nats(_))
                );
                let _ = tx.send(if unreachable {
                    Started::Unreachable(answer)
                } else {
                    Started::Refused(answer)
                });
                unreachable
            }
            (Err(e), None) => {
                tracing::warn!(deploy = %id, error = %error_chain(&e), "rollout stopped");
                false
            }
            (Ok(finished), _) => {
                tracing::info!(deploy = %id, outcome = ?finished.outcome.outcome, "rollout ended");
                false
            }
        }
    }
}

/// How a rollout's start went.
enum Started {
    /// Its first event is in the log.
    Accepted(flotilla_events::DeployId),
    /// It cannot start (the answer says why): asking again would not help.
    Refused(Response),
    /// NATS did not answer before it started (the lock bucket, just after a lost node):
    /// asking again may help.
    Unreachable(Response),
}

/// A rollout ready to run.
struct Prepared {
    config: Config,
    request: Planned,
}

/// What a rollout request runs: a deploy-like rollout, or an app operation.
enum Planned {
    Rollout(ProcedureRequest),
    Operation(OperationRequest),
}

impl Planned {
    fn deploy_id(&self) -> &flotilla_events::DeployId {
        match self {
            Planned::Rollout(r) => &r.deploy_id,
            Planned::Operation(o) => &o.deploy_id,
        }
    }

    /// What `status` shows it as: `deploy`, `rollback`, `app stop`, ...
    fn command(&self) -> String {
        match self {
            Planned::Rollout(r) => r.command.to_owned(),
            Planned::Operation(o) => o.operation.to_string(),
        }
    }
}

/// Why a rollout could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("secret {name} does not open with this service's key")]
    Secret {
        name: String,
        #[source]
        source: SealError,
    },
    #[error("the config does not load here")]
    Config(#[source] ConfigErrors),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

impl StartError {
    fn response(&self) -> Response {
        let hint = match self {
            StartError::Secret { .. } => Some(
                "the service's key changed since this machine pinned it: see \
                 `.flotilla/service.pub` (ARCHITECTURE.md, the control plane)"
                    .to_owned(),
            ),
            StartError::Config(_) => None,
            StartError::Plan(p) => Some(p.hint().to_owned()),
        };
        refused(self, hint)
    }
}

/// What to do about a procedure that stopped before its first event.
fn procedure_hint(e: &ProcedureError) -> Option<String> {
    match e {
        ProcedureError::Plan(p) => Some(p.hint().to_owned()),
        ProcedureError::Lock(_) => {
            Some("wait for it with --lock-wait SECONDS, or see `flotilla lock status`".to_owned())
        }
        _ => None,
    }
}

/// A refusal carrying the whole error chain, for the user.
fn refused(e: &dyn std::error::Error, hint: Option<String>) -> Response {
    Response::Refused {
        reason: error_chain(e),
        hint,
    }
}

/// A request whose answer did not decode, or did not come.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("encoding the request")]
    Encode(#[source] WireError),
    #[error("no answer from the scheduler service (is `flotilla scheduler run` up?)")]
    Request(#[source] async_nats::RequestError),
    #[error("the scheduler service's answer")]
    Decode(#[source] WireError),
}

/// Asks the service one thing and waits up to `timeout` for its answer (the client side, for
/// the CLI and tests; a rollout's answer comes once it holds the lock, so its timeout covers
/// `--lock-wait`).
pub async fn ask(
    client: &async_nats::Client,
    request: &Request,
    timeout: std::time::Duration,
) -> Result<Response, AskError> {
    let bytes = wire::encode(request).map_err(AskError::Encode)?;
    let subject = control::request_subject(request.verb());
    let ask = async_nats::Request::new()
        .payload(bytes.into())
        .timeout(Some(timeout));
    let message = client
        .send_request(subject, ask)
        .await
        .map_err(AskError::Request)?;
    wire::decode(&message.payload).map_err(AskError::Decode)
}

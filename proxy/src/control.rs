//! The admin operations: deploy with health gate and drain, remove, maintenance,
//! pause. Every change is saved to the state file before it is reported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::acme::Acme;
use crate::admin::protocol::{DeployRequest, Deployed, ErrorKind, Reply, Request, ServiceStatus};
use crate::forward::DataPath;
use crate::health;
use crate::router::{Gate, Route, Table};
use crate::spec::{ServiceSpec, TlsSpec};
use crate::state::{self, STATE_VERSION, SavedService, SavedState, StateError};
use crate::target::Target;
use crate::tls::{self, CertStore};

/// Owns every change to the routing table.
#[derive(Debug)]
pub struct Control {
    data: Arc<DataPath>,
    certs: Arc<CertStore>,
    acme: Option<Arc<Acme>>,
    state_path: PathBuf,
    /// Serialises state-file writes so the last write holds the latest table.
    save_lock: Mutex<()>,
    /// One deploy (or other change) per service at a time.
    service_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// An operation failed; becomes an error reply.
#[derive(Debug)]
struct Failure(ErrorKind, String);

impl Control {
    pub fn new(
        data: Arc<DataPath>,
        certs: Arc<CertStore>,
        acme: Option<Arc<Acme>>,
        state_path: PathBuf,
    ) -> Self {
        Self {
            data,
            certs,
            acme,
            state_path,
            save_lock: Mutex::new(()),
            service_locks: Mutex::new(HashMap::new()),
        }
    }

    /// Loads the state file and serves its routes at once (no health gate: they were live).
    pub fn restore(&self) -> Result<usize, StateError> {
        let saved = state::load(&self.state_path)?;
        let mut routes = Vec::new();
        for s in saved.services {
            if let Err(e) = self.install_certs(&s.spec) {
                tracing::error!(service = %s.spec.name, error = %e, "certificate not loaded at start");
            }
            self.data
                .metrics
                .set_target(&s.spec.name, Some((&s.spec.target, s.spec.version_label())));
            routes.push(Arc::new(Route {
                target: Target::new(s.spec.target.clone(), s.spec.version_label()),
                metrics: self
                    .data
                    .metrics
                    .for_route(&s.spec.name, s.spec.version_label()),
                spec: s.spec,
                maintenance: s.maintenance,
                gate: Gate::new(),
                health: s.health,
            }));
        }
        let count = routes.len();
        self.data.router.update(|_| Table::from_routes(routes));
        Ok(count)
    }

    /// Carries out one admin request.
    pub async fn apply(&self, request: Request) -> Reply {
        let result = match request {
            Request::Deploy(d) => self.deploy(d).await.map(Reply::Deployed),
            Request::Remove {
                service,
                drain_timeout_ms,
            } => self.remove(&service, drain_timeout_ms).await,
            Request::List => Ok(self.list()),
            Request::Maintenance { service, message } => {
                let message = message.unwrap_or_else(|| "down for maintenance".to_owned());
                self.set_maintenance(&service, Some(message)).await
            }
            Request::Live { service } => self.set_maintenance(&service, None).await,
            Request::Pause {
                service,
                timeout_ms,
            } => self.with_route(&service, |r| {
                r.gate.pause(Duration::from_millis(timeout_ms))
            }),
            Request::Resume { service } => self.with_route(&service, |r| r.gate.resume()),
        };
        result.unwrap_or_else(|Failure(kind, message)| Reply::Error { kind, message })
    }

    fn service_lock(&self, service: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.service_locks.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        Arc::clone(locks.entry(service.to_owned()).or_default())
    }

    async fn deploy(&self, d: DeployRequest) -> Result<Deployed, Failure> {
        let spec = d.service;
        spec.validate()
            .map_err(|m| Failure(ErrorKind::BadRequest, m))?;
        if spec.tls == Some(TlsSpec::Acme) && self.acme.is_none() {
            return Err(Failure(
                ErrorKind::BadRequest,
                "tls by acme needs the proxy started with --acme-directory".to_owned(),
            ));
        }
        let lock = self.service_lock(&spec.name);
        let _held = lock.lock().await;
        let static_cert = match &spec.tls {
            Some(TlsSpec::Static {
                cert_path,
                key_path,
            }) => Some(
                tls::load_files(cert_path, key_path)
                    .map_err(|e| Failure(ErrorKind::Tls, e.to_string()))?,
            ),
            _ => None,
        };
        let started = Instant::now();
        let deadline = started + Duration::from_millis(d.deploy_timeout_ms);
        if let Err(last) = health::wait_healthy(&spec.target, &d.health, deadline).await {
            return Err(Failure(
                ErrorKind::Unhealthy,
                format!(
                    "target {} of {} not healthy after {}ms, routing unchanged; last check: {last}",
                    spec.target,
                    spec.name,
                    started.elapsed().as_millis()
                ),
            ));
        }
        let previous = self.data.router.snapshot().get(&spec.name).cloned();
        if let Some(key) = static_cert {
            self.certs.insert(&spec.hosts, key);
        }
        let target = Target::new(spec.target.clone(), spec.version_label());
        let route = Route {
            metrics: self
                .data
                .metrics
                .for_route(&spec.name, spec.version_label()),
            spec: spec.clone(),
            target,
            maintenance: previous.as_ref().and_then(|p| p.maintenance.clone()),
            gate: previous
                .as_ref()
                .map_or_else(Gate::new, |p| Arc::clone(&p.gate)),
            health: Some(d.health.clone()),
        };
        self.data.router.update(|t| t.with(route));
        self.data
            .metrics
            .set_target(&spec.name, Some((&spec.target, spec.version_label())));
        if let Some(prev) = &previous {
            let dropped: Vec<String> = prev
                .spec
                .hosts
                .iter()
                .filter(|h| !spec.hosts.contains(h))
                .cloned()
                .collect();
            self.certs.remove(&dropped);
        }
        self.start_acme(&spec);
        let saved = self.save();
        let drain_cancelled = match &previous {
            Some(prev) => {
                let drained = prev
                    .target
                    .drain(Instant::now() + Duration::from_millis(d.drain_timeout_ms))
                    .await;
                drained.cancelled
            }
            None => 0,
        };
        saved?;
        tracing::info!(service = %spec.name, to = %spec.target, version = spec.version_label(), "switched");
        Ok(Deployed {
            service: spec.name.clone(),
            from: previous.map(|p| p.spec.target.clone()),
            to: spec.target.clone(),
            version: spec.version_label().to_owned(),
            drain_cancelled,
        })
    }

    async fn remove(&self, service: &str, drain_timeout_ms: u64) -> Result<Reply, Failure> {
        let lock = self.service_lock(service);
        let _held = lock.lock().await;
        let Some(previous) = self.data.router.snapshot().get(service).cloned() else {
            return Err(not_found(service));
        };
        self.data.router.update(|t| t.without(service));
        self.certs.remove(&previous.spec.hosts);
        self.data.metrics.set_target(service, None);
        let saved = self.save();
        previous
            .target
            .drain(Instant::now() + Duration::from_millis(drain_timeout_ms))
            .await;
        saved?;
        Ok(Reply::Removed {
            service: service.to_owned(),
        })
    }

    fn list(&self) -> Reply {
        let services = self
            .data
            .router
            .snapshot()
            .routes()
            .map(|r| ServiceStatus {
                spec: r.spec.clone(),
                maintenance: r.maintenance.clone(),
                paused: r.gate.is_paused(),
                in_flight: r.target.in_flight(),
                health: r.health.clone(),
            })
            .collect();
        Reply::Services { services }
    }

    async fn set_maintenance(
        &self,
        service: &str,
        message: Option<String>,
    ) -> Result<Reply, Failure> {
        let lock = self.service_lock(service);
        let _held = lock.lock().await;
        let Some(current) = self.data.router.snapshot().get(service).cloned() else {
            return Err(not_found(service));
        };
        self.data.router.update(|t| {
            t.with(Route {
                spec: current.spec.clone(),
                target: Arc::clone(&current.target),
                maintenance: message,
                gate: Arc::clone(&current.gate),
                metrics: Arc::clone(&current.metrics),
                health: current.health.clone(),
            })
        });
        self.save()?;
        Ok(Reply::Done {
            service: service.to_owned(),
        })
    }

    fn with_route(&self, service: &str, f: impl FnOnce(&Route)) -> Result<Reply, Failure> {
        let table = self.data.router.snapshot();
        let route = table.get(service).ok_or_else(|| not_found(service))?;
        f(route);
        Ok(Reply::Done {
            service: service.to_owned(),
        })
    }

    fn install_certs(&self, spec: &ServiceSpec) -> Result<(), tls::TlsError> {
        if let Some(TlsSpec::Static {
            cert_path,
            key_path,
        }) = &spec.tls
        {
            self.certs
                .insert(&spec.hosts, tls::load_files(cert_path, key_path)?);
        }
        self.start_acme(spec);
        Ok(())
    }

    /// Issues (or loads from cache) ACME certificates in the background; a failure is logged
    /// and retried by the renewal loop, and plain HTTP keeps working meanwhile.
    fn start_acme(&self, spec: &ServiceSpec) {
        if spec.tls != Some(TlsSpec::Acme) {
            return;
        }
        let Some(acme) = self.acme.clone() else {
            tracing::error!(service = %spec.name, "service asks for acme but the proxy has no --acme-directory");
            return;
        };
        let hosts = spec.hosts.clone();
        tokio::spawn(async move {
            if let Err(e) = acme.ensure(&hosts).await {
                tracing::error!(?hosts, error = %e, "acme certificate not obtained");
            }
        });
    }

    /// Hosts of every ACME service, for the renewal loop.
    pub fn acme_hosts(&self) -> Vec<String> {
        self.data
            .router
            .snapshot()
            .routes()
            .filter(|r| r.spec.tls == Some(TlsSpec::Acme))
            .flat_map(|r| r.spec.hosts.clone())
            .collect()
    }

    fn save(&self) -> Result<(), Failure> {
        let _held = match self.save_lock.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let table = self.data.router.snapshot();
        let state = SavedState {
            version: STATE_VERSION,
            services: table
                .routes()
                .map(|r| SavedService {
                    spec: r.spec.clone(),
                    maintenance: r.maintenance.clone(),
                    health: r.health.clone(),
                })
                .collect(),
        };
        state::save(&self.state_path, &state).map_err(|e| {
            tracing::error!(error = %e, "state not saved");
            Failure(
                ErrorKind::State,
                format!("{e}: the change is live but will not survive a restart"),
            )
        })
    }
}

fn not_found(service: &str) -> Failure {
    Failure(ErrorKind::NotFound, format!("no service named {service:?}"))
}

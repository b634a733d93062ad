//! The live export: a deploy's spans sent to an OTLP/HTTP collector as they close, by the
//! same fold `flotilla replay ID --otlp` runs, so both send the same spans with the same ids.
//! Exports run in a background task and never hold a deploy up; a collector that is down
//! costs one warning per run, not the deploy.

use super::{SERVICE_NAME, TraceFold};
use flotilla_events::Envelope;
use flotilla_telemetry::{Endpoint, ExportError, Exporter};
use std::collections::HashMap;
use tokio::sync::mpsc;

/// Where a run's spans go: `x-flotilla.otel.endpoint` (a collector's base URL) if the config
/// sets it, else the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
/// `OTEL_EXPORTER_OTLP_ENDPOINT` from `env`; `None` when neither is set: nothing is exported.
pub fn endpoint(
    configured: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<Result<Endpoint, ExportError>> {
    match configured {
        Some(url) => Some(Endpoint::from_base(url)),
        None => Endpoint::from_env(env),
    }
}

/// A run's live span export; without an endpoint it does nothing.
#[derive(Debug, Default)]
pub struct Live {
    tx: Option<mpsc::UnboundedSender<Envelope>>,
    task: Option<tokio::task::JoinHandle<Option<ExportError>>>,
}

impl Live {
    /// Exports to `endpoint`, if given, from a task of the current runtime.
    pub fn start(endpoint: Option<Endpoint>) -> Self {
        let Some(endpoint) = endpoint else {
            return Self::default();
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let exporter = Exporter::new(endpoint, SERVICE_NAME);
        let task = tokio::spawn(export_loop(exporter, rx));
        Self {
            tx: Some(tx),
            task: Some(task),
        }
    }

    /// Folds in an event that just landed in the log (of any deploy the run drives: an
    /// auto-rollback is a deploy of its own, with its own trace).
    pub fn observe(&self, event: &Envelope) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event.clone());
        }
    }

    /// Sends what is still queued and waits for it (each request bounded by the exporter's
    /// timeout), so a short deploy's spans are out before the process exits. Returns the
    /// first export that failed, for the caller to warn about.
    pub async fn finish(mut self) -> Option<ExportError> {
        self.tx = None;
        match self.task.take() {
            Some(task) => task.await.ok().flatten(),
            None => None,
        }
    }
}

async fn export_loop(
    exporter: Exporter,
    mut rx: mpsc::UnboundedReceiver<Envelope>,
) -> Option<ExportError> {
    let mut folds: HashMap<String, TraceFold> = HashMap::new();
    let mut first_error = None;
    while let Some(first) = rx.recv().await {
        // Everything already queued goes in the same request.
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(e) = next {
            let fold = folds
                .entry(e.deploy_id.as_str().to_owned())
                .or_insert_with(|| TraceFold::new(e.deploy_id.as_str()));
            batch.extend(fold.apply(&e));
            next = rx.try_recv().ok();
        }
        if let Err(e) = exporter.export(&batch).await {
            tracing::warn!(error = %e, "traces: export failed; the deploy goes on");
            first_error.get_or_insert(e);
        }
    }
    first_error
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x-flotilla.otel.endpoint` wins over the standard variables; with neither, a run
    /// exports nothing.
    #[test]
    fn the_config_wins_and_nothing_set_means_no_export() {
        let env = |k: &str| {
            (k == flotilla_telemetry::export::ENV_ENDPOINT).then(|| "http://10.0.0.9:4318".into())
        };
        let configured = endpoint(Some("http://127.0.0.1:4318"), env)
            .unwrap()
            .unwrap();
        assert_eq!(configured.to_string(), "http://127.0.0.1:4318/v1/traces");
        let from_env = endpoint(None, env).unwrap().unwrap();
        assert_eq!(from_env.to_string(), "http://10.0.0.9:4318/v1/traces");
        assert!(endpoint(None, |_| None).is_none());
        assert!(Live::start(None).tx.is_none());
    }
}

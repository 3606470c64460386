//! What the agent counts, served on `--metrics-listen` at `/metrics`:
//! Workload API calls by method and result with their latency, caller
//! attestations, the SVID cache, SVID rotations and how long ago the server
//! last sent an update.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use lanyard_core::metrics::{CONTENT_TYPE, Counter, Exposition, Histogram};
use lanyard_core::unix_secs;

/// The agent's counters and gauges.
#[derive(Debug, Default)]
pub(crate) struct AgentMetrics {
    /// (method, gRPC code) → calls.
    calls: Mutex<BTreeMap<(String, String), u64>>,
    /// method → time to answer (to the first message of a stream).
    latency: Mutex<BTreeMap<String, Arc<Histogram>>>,
    /// Callers attested: [ok, failed].
    pub(crate) attestations: [Counter; 2],
    /// SVIDs minted to replace one the agent held (rotation, entry change, revoked CA).
    pub(crate) rotations: Counter,
    /// SVIDs minted for an entry that had none.
    pub(crate) first_mints: Counter,
    /// Unix seconds of the newest update applied from the server (0: none yet).
    pub(crate) last_sync: AtomicU64,
    /// SVIDs held.
    pub(crate) svids: AtomicU64,
    /// Registration entries held.
    pub(crate) entries: AtomicU64,
    /// Batches sent to the server on the MintTaskTokens stream.
    pub(crate) task_token_batches: Counter,
    /// Task-token requests sent in them.
    pub(crate) task_token_batched: Counter,
}

impl AgentMetrics {
    /// Counts one call of `method` that ended with gRPC `code`.
    fn call(&self, method: &str, code: &str, elapsed: std::time::Duration) {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        *calls.entry((method.to_owned(), code.to_owned())).or_default() += 1;
        drop(calls);
        let histogram = {
            let mut latency = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(latency.entry(method.to_owned()).or_default())
        };
        histogram.observe(elapsed);
    }

    /// Counts an attestation of a caller.
    pub(crate) fn attested(&self, ok: bool) {
        self.attestations[usize::from(!ok)].inc();
    }

    /// The Prometheus text.
    pub(crate) fn render(&self) -> String {
        let mut e = Exposition::default();
        let name = "lanyard_agent_workload_api_calls_total";
        e.family(name, "counter", "Workload API and Tasks API calls, by method and gRPC code.");
        for ((method, code), n) in self.calls.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            e.sample(name, &[("method", method), ("code", code)], n);
        }
        let name = "lanyard_agent_workload_api_duration_seconds";
        e.family(name, "histogram", "Time to answer a call (to the first message of a stream), by method.");
        for (method, histogram) in self.latency.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            e.histogram(name, &[("method", method)], histogram);
        }
        let name = "lanyard_agent_attestations_total";
        e.family(name, "counter", "Callers attested from the kernel, by result.");
        e.sample(name, &[("result", "ok")], self.attestations[0].get());
        e.sample(name, &[("result", "failed")], self.attestations[1].get());
        let name = "lanyard_agent_svid_mints_total";
        e.family(name, "counter", "X.509-SVIDs minted, first ones and rotations.");
        e.sample(name, &[("reason", "first")], self.first_mints.get());
        e.sample(name, &[("reason", "rotation")], self.rotations.get());
        let name = "lanyard_agent_task_token_batches_total";
        e.family(name, "counter", "Task-token batches sent to the server (MintTaskTokens stream messages).");
        e.sample(name, &[], self.task_token_batches.get());
        let name = "lanyard_agent_task_token_batched_total";
        e.family(name, "counter", "Task-token requests sent in them (divided by the calls: the mean batch).");
        e.sample(name, &[], self.task_token_batched.get());
        let gauges = [
            ("lanyard_agent_svids", "X.509-SVIDs held in the cache.", self.svids.load(Ordering::Relaxed)),
            ("lanyard_agent_entries", "Registration entries held.", self.entries.load(Ordering::Relaxed)),
        ];
        for (name, help, value) in gauges {
            e.family(name, "gauge", help).sample(name, &[], value);
        }
        let name = "lanyard_agent_sync_age_seconds";
        e.family(name, "gauge", "Seconds since the newest update from the server was applied (-1: none yet).");
        match self.last_sync.load(Ordering::Relaxed) {
            0 => e.sample(name, &[], -1),
            at => e.sample(name, &[], unix_secs(SystemTime::now()).saturating_sub(at)),
        };
        e.finish()
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the task is dropped.
pub(crate) async fn serve(listener: tokio::net::TcpListener, metrics: Arc<AgentMetrics>) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    axum::serve(listener, app).await
}

/// Binds the metrics listener (so a taken port fails the start).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// A tower layer counting every gRPC call through the agent's server.
#[derive(Clone, Debug)]
pub(crate) struct CallMetricsLayer(pub(crate) Arc<AgentMetrics>);

impl<S> tower::Layer<S> for CallMetricsLayer {
    type Service = CallMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallMetrics { inner, metrics: Arc::clone(&self.0) }
    }
}

/// The service [`CallMetricsLayer`] wraps around the gRPC services.
#[derive(Clone, Debug)]
pub(crate) struct CallMetrics<S> {
    inner: S,
    metrics: Arc<AgentMetrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for CallMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        let started = Instant::now();
        let metrics = Arc::clone(&self.metrics);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await;
            // An error before any message comes back in the headers
            // ("trailers-only"); a call that answers has none there.
            let code = match &response {
                Ok(r) => r.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_owned(),
                Err(_) => "transport".to_owned(),
            };
            metrics.call(&method, grpc_code_name(&code), started.elapsed());
            response
        })
    }
}

/// The name of a numeric gRPC status code.
fn grpc_code_name(code: &str) -> &str {
    match code {
        "0" => "ok",
        "3" => "invalid_argument",
        "5" => "not_found",
        "7" => "permission_denied",
        "9" => "failed_precondition",
        "13" => "internal",
        "14" => "unavailable",
        "16" => "unauthenticated",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_attestations_and_gauges_render() {
        let m = AgentMetrics::default();
        m.call("FetchX509SVID", "ok", std::time::Duration::from_micros(200));
        m.call("FetchX509SVID", "ok", std::time::Duration::from_micros(300));
        m.call("FetchJWTSVID", grpc_code_name("7"), std::time::Duration::from_micros(100));
        m.attested(true);
        m.attested(false);
        m.rotations.inc();
        m.svids.store(3, Ordering::Relaxed);
        let text = m.render();
        for line in [
            "lanyard_agent_workload_api_calls_total{method=\"FetchX509SVID\",code=\"ok\"} 2",
            "lanyard_agent_workload_api_calls_total{method=\"FetchJWTSVID\",code=\"permission_denied\"} 1",
            "lanyard_agent_workload_api_duration_seconds_count{method=\"FetchX509SVID\"} 2",
            "lanyard_agent_attestations_total{result=\"failed\"} 1",
            "lanyard_agent_svid_mints_total{reason=\"rotation\"} 1",
            "lanyard_agent_svids 3",
            "lanyard_agent_sync_age_seconds -1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }
}

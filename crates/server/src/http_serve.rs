//! Serving the bundle endpoint's router over HTTP/1.1 with limits that
//! `axum::serve` does not set: a client must send its request headers within
//! [`HEADER_READ_TIMEOUT`] (a slow-loris client that trickles them holds a
//! connection no longer), and shutdown is graceful.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

/// How long a client has to send a request's headers.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections get to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` turns true, then lets open
/// connections finish (up to [`DRAIN`]).
pub(crate) async fn serve<L>(mut listener: L, app: Router, header_timeout: Duration, mut stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    loop {
        tokio::select! {
            (io, _) = listener.accept() => {
                let service = TowerToHyperService::new(app.clone());
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "bundle endpoint connection ended");
                    }
                });
            }
            changed = stop.wait_for(|stopping| *stopping) => {
                let _ = changed;
                break;
            }
        }
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("bundle endpoint connections did not finish within {DRAIN:?}");
    }
}

//! Following the other replicas: a connection that LISTENs on the commit
//! channel and raises the heads from each notification.
//!
//! Notifications sent while the connection was down are lost, so after
//! every (re)connection the heads are read from the database once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{CHANNEL, HeadRow, Heads, pg};
use crate::error::Result;

/// The first wait before reconnecting, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The listening task; stopped when dropped.
#[derive(Debug)]
pub(super) struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Listener {
    /// Listens once before returning (so that a database that cannot be
    /// reached fails here), then keeps listening, reconnecting as needed,
    /// until dropped.
    pub(super) async fn start(config: tokio_postgres::Config, heads: Arc<Heads>) -> Result<Self> {
        let first = Listening::open(&config, &heads).await?;
        Ok(Self(tokio::spawn(follow(config, heads, first))))
    }
}

async fn follow(config: tokio_postgres::Config, heads: Arc<Heads>, first: Listening) {
    let mut listening = Some(first);
    let mut backoff = MIN_BACKOFF;
    loop {
        if let Some(l) = listening.take() {
            l.run(&heads).await;
            backoff = MIN_BACKOFF;
            tracing::warn!("the PostgreSQL LISTEN connection closed; reconnecting");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        match Listening::open(&config, &heads).await {
            Ok(l) => listening = Some(l),
            Err(e) => tracing::warn!(error = %e, "cannot LISTEN on PostgreSQL yet"),
        }
    }
}

/// A connection that LISTENs: its client (which keeps it open) and the
/// payloads its driver task forwards.
struct Listening {
    _client: tokio_postgres::Client,
    payloads: mpsc::UnboundedReceiver<String>,
}

impl Listening {
    async fn open(config: &tokio_postgres::Config, heads: &Heads) -> Result<Self> {
        let (client, mut connection) = config.connect(NoTls).await.map_err(pg)?;
        let (tx, payloads) = mpsc::unbounded_channel();
        // Drives the connection; ends (dropping `tx`) when it closes.
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the PostgreSQL LISTEN connection failed");
                        return;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(pg)?;
        // Whatever was committed before LISTEN took effect.
        let head = HeadRow::read(&client, false).await?;
        heads.raise((head.revision, head.audit.seq, head.revocation));
        Ok(Self { _client: client, payloads })
    }

    /// Raises the heads from every notification until the connection closes.
    async fn run(mut self, heads: &Heads) {
        while let Some(payload) = self.payloads.recv().await {
            match parse(&payload) {
                Some(h) => heads.raise(h),
                None => tracing::warn!(payload, "an unreadable notification on the lanyard channel"),
            }
        }
    }
}

/// `"<revision> <audit seq> <revocation seq>"`, as [`HeadRow::notification`] writes it.
fn parse(payload: &str) -> Option<(u64, u64, u64)> {
    let mut parts = payload.split(' ').map(str::parse::<u64>);
    let parsed = (parts.next()?.ok()?, parts.next()?.ok()?, parts.next()?.ok()?);
    parts.next().is_none().then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_carry_three_heads() {
        assert_eq!(parse("7 120 3"), Some((7, 120, 3)));
        for bad in ["", "7 120", "7 120 3 4", "a b c", "-1 2 3"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}

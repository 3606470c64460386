//! Forwards workloads' task-token requests to the server in batches.
//!
//! Every FetchTaskToken is one request to the server; sent one call each,
//! at thousands a second most of the agent's and the server's CPU went to
//! the calls themselves (HTTP/2 streams, TLS records, task wake-ups) rather
//! than to minting. Here requests queue for one sender, which sends what has
//! queued as one `MintTaskTokens` call, with at most [`MAX_IN_FLIGHT`] calls
//! out at once. Nothing waits to fill a batch: a request that finds no call
//! out goes at once, alone, so batching adds no latency when the agent is
//! idle and batches grow only while calls are already out.
//!
//! The server decides, signs and audits each request on its own, so a batch
//! changes nothing a workload sees but the number of round trips.

use std::sync::Arc;

use lanyard_proto::common::TaskToken;
use lanyard_proto::node::node_client::NodeClient;
use lanyard_proto::node::{MintTaskTokenRequest, MintTaskTokensRequest, TaskTokenResult};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::metrics::AgentMetrics;

/// Most requests in one call (the server takes up to 256).
pub(crate) const MAX_BATCH: usize = 64;
/// Most calls out at once; while they are, requests queue into the next.
/// Each call waits for its records' group commit, so with too few out the
/// server idles between flushes (2 gave 7,800–8,700 tokens/s with 64
/// workloads, 8 gave 8,600–9,000: docs/benchmarks.md).
pub(crate) const MAX_IN_FLIGHT: usize = 8;
/// Requests waiting for a call before FetchTaskToken callers wait to queue.
const QUEUE: usize = 4096;

/// A request and where its answer goes.
struct Queued {
    request: MintTaskTokenRequest,
    reply: oneshot::Sender<Result<TaskToken, Status>>,
}

/// The handle FetchTaskToken calls use; cheap to clone.
#[derive(Clone)]
pub(crate) struct MintBatcher {
    queue: mpsc::Sender<Queued>,
}

impl MintBatcher {
    /// Starts the sender, which takes the server connection from `client`
    /// for every call (it changes on failover and SVID renewal) and ends
    /// when the last handle is dropped.
    pub(crate) fn start(client: watch::Receiver<Option<NodeClient<Channel>>>, metrics: Arc<AgentMetrics>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_batches(rx, client, metrics));
        Self { queue }
    }

    /// The server's answer to `request`, as MintTaskToken would give it.
    pub(crate) async fn mint(&self, request: MintTaskTokenRequest) -> Result<TaskToken, Status> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Status::unavailable("the agent is shutting down");
        self.queue.send(Queued { request, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Takes what has queued (up to [`MAX_BATCH`]) whenever a call may go out.
async fn send_batches(
    mut queue: mpsc::Receiver<Queued>,
    client: watch::Receiver<Option<NodeClient<Channel>>>,
    metrics: Arc<AgentMetrics>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        // Waiting for a slot is what lets the next batch fill.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        metrics.task_token_batches.inc();
        metrics.task_token_batched.add(batch.len() as u64);
        let client = client.clone();
        tokio::spawn(async move {
            send(batch, client).await;
            drop(slot);
        });
    }
}

/// Sends one batch and answers each request.
async fn send(batch: Vec<Queued>, client: watch::Receiver<Option<NodeClient<Channel>>>) {
    let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.request, q.reply)).unzip();
    let answer = match crate::workload::connected(client).await {
        Ok(mut client) => client.mint_task_tokens(MintTaskTokensRequest { requests }).await.map(|r| r.into_inner()),
        Err(status) => Err(status),
    };
    let expected = replies.len();
    let answer = answer.and_then(|r| match r.results.len() {
        n if n == expected => Ok(r.results),
        n => Err(Status::internal(format!("the server answered {n} of {expected} task-token requests"))),
    });
    match answer {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(answer_of(result));
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}

/// One result as MintTaskToken would have answered it.
fn answer_of(result: TaskTokenResult) -> Result<TaskToken, Status> {
    match (result.token, Code::from_i32(result.code)) {
        (Some(token), Code::Ok) => Ok(token),
        (_, Code::Ok) => Err(Status::internal("the server answered neither a token nor a refusal")),
        (_, code) => Err(Status::new(code, result.error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_answer_as_the_single_call_would() {
        let token =
            TaskToken { token: "t".into(), expires_at: 1, spiffe_id: "spiffe://example.org/c".into(), jti: "j".into() };
        let ok = TaskTokenResult { token: Some(token.clone()), code: 0, error: String::new() };
        assert_eq!(answer_of(ok).unwrap(), token);
        let refused = TaskTokenResult { token: None, code: Code::PermissionDenied as i32, error: "tool x".into() };
        let status = answer_of(refused).unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "tool x"));
        let empty = TaskTokenResult { token: None, code: 0, error: String::new() };
        assert_eq!(answer_of(empty).unwrap_err().code(), Code::Internal);
        // A code this build does not know is Unknown, never success.
        let odd = TaskTokenResult { token: Some(token), code: 99, error: "?".into() };
        assert_eq!(answer_of(odd).unwrap_err().code(), Code::Unknown);
    }
}

//! Forwards workloads' task-token requests to the server over one stream.
//!
//! Every FetchTaskToken is one request to the server. Sent as a call each,
//! at thousands a second most of the agent's and the server's CPU went to
//! the calls themselves (HTTP/2 streams and header blocks, the call stacks
//! on both sides, task wake-ups) rather than to minting; batching them into
//! `MintTaskTokens` calls helped, and a stream helps further: the agent
//! keeps one `MintTaskTokens` stream open and sends what has queued as one
//! message, with at most [`MAX_IN_FLIGHT`] batches unanswered at once.
//! Nothing waits to fill a batch: a request that finds no batch out goes at
//! once, alone, so batching adds no latency when the agent is idle and
//! batches grow only while others are out.
//!
//! The stream is opened by the first request that finds none, on the
//! connection the agent has to the server then. When that connection
//! changes (failover, SVID renewal) later batches go on a new stream and
//! the old one is closed once its batches are answered; when it fails, its
//! unanswered requests get the failure (as a failed call would give them)
//! and the next request opens a new one.
//!
//! The server decides, signs and audits each request on its own, so a batch
//! changes nothing a workload sees but the number of messages.

use std::collections::HashMap;
use std::sync::Arc;

use lanyard_proto::common::TaskToken;
use lanyard_proto::node::node_client::NodeClient;
use lanyard_proto::node::{MintTaskTokenRequest, MintTaskTokensRequest, MintTaskTokensResponse, TaskTokenResult};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::metrics::AgentMetrics;

/// Most requests in one batch (the server takes up to 256).
pub(crate) const MAX_BATCH: usize = 64;
/// Most batches unanswered at once; while they are, requests queue into the
/// next. Each waits for its records' group commit, so with too few out the
/// server idles between flushes (2 calls out gave 7,800–8,700 tokens/s with
/// 64 workloads, 8 gave 8,600–9,000: docs/benchmarks.md).
pub(crate) const MAX_IN_FLIGHT: usize = 8;
/// Requests waiting for a batch before FetchTaskToken callers wait to queue.
const QUEUE: usize = 4096;

/// A request and where its answer goes.
struct Queued {
    request: MintTaskTokenRequest,
    reply: oneshot::Sender<Result<TaskToken, Status>>,
}

/// Where each request of a batch is answered, in the batch's order.
type Replies = Vec<oneshot::Sender<Result<TaskToken, Status>>>;

/// The server connection, which changes on failover and SVID renewal.
type Client = watch::Receiver<Option<NodeClient<Channel>>>;

/// The handle FetchTaskToken calls use; cheap to clone.
#[derive(Clone)]
pub(crate) struct MintBatcher {
    queue: mpsc::Sender<Queued>,
}

impl MintBatcher {
    /// Starts the sender, which ends when the last handle is dropped.
    pub(crate) fn start(client: Client, metrics: Arc<AgentMetrics>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(forward(rx, client, metrics));
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

/// Opens a stream for the first request that finds none open and serves it
/// until it fails or the connection changes; then the next one.
async fn forward(mut queue: mpsc::Receiver<Queued>, mut client: Client, metrics: Arc<AgentMetrics>) {
    while let Some(first) = queue.recv().await {
        let connection = match crate::workload::connected(client.clone()).await {
            // The connection now, marked seen: a change from here on moves
            // later batches to a new stream.
            Ok(_) => client
                .borrow_and_update()
                .clone()
                .ok_or_else(|| Status::unavailable("the server is unreachable; retry")),
            Err(status) => Err(status),
        };
        let mut node = match connection {
            Ok(node) => node,
            Err(status) => {
                // Everything queued meanwhile would wait as long again.
                let mut waiting = vec![first];
                while let Ok(queued) = queue.try_recv() {
                    waiting.push(queued);
                }
                fail(waiting.into_iter().map(|q| q.reply), &status);
                continue;
            }
        };
        let mut stream = Stream::default();
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
        stream.send(&tx, first, &mut queue, &metrics);
        let answers = match node.mint_task_tokens(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
            Ok(answers) => answers.into_inner(),
            Err(status) => {
                stream.fail(&status);
                continue;
            }
        };
        if !stream.serve(tx, answers, &mut queue, &mut client, &metrics).await {
            return;
        }
    }
}

/// One open stream's unanswered batches.
#[derive(Default)]
struct Stream {
    pending: HashMap<u64, Replies>,
    last_batch: u64,
}

impl Stream {
    /// Sends `first` and what has queued behind it (up to [`MAX_BATCH`]) as
    /// the next batch.
    fn send(
        &mut self,
        tx: &mpsc::Sender<MintTaskTokensRequest>,
        first: Queued,
        queue: &mut mpsc::Receiver<Queued>,
        metrics: &AgentMetrics,
    ) {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        metrics.task_token_batches.inc();
        metrics.task_token_batched.add(batch.len() as u64);
        let (requests, replies): (Vec<_>, Replies) = batch.into_iter().map(|q| (q.request, q.reply)).unzip();
        self.last_batch += 1;
        // The channel holds MAX_IN_FLIGHT and no more are ever unanswered,
        // so it is full only when the stream is gone, whose failure then
        // arrives as the answer.
        match tx.try_send(MintTaskTokensRequest { requests, batch: self.last_batch }) {
            Ok(()) => {
                self.pending.insert(self.last_batch, replies);
            }
            Err(_) => fail(replies, &Status::unavailable("the task-token stream to the server has closed; retry")),
        }
    }

    /// Sends batches and answers them until the stream fails or the
    /// connection changes (true: go on with a new stream), or the agent
    /// stops (false).
    async fn serve(
        mut self,
        tx: mpsc::Sender<MintTaskTokensRequest>,
        mut answers: Streaming<MintTaskTokensResponse>,
        queue: &mut mpsc::Receiver<Queued>,
        client: &mut Client,
        metrics: &AgentMetrics,
    ) -> bool {
        loop {
            tokio::select! {
                // In this order: a batch taken after a change goes on the new
                // connection, and answers free room before more is taken.
                biased;
                Ok(()) = client.changed() => {
                    // Closing our side lets the server answer what it has and end.
                    drop(tx);
                    tokio::spawn(self.drain(answers));
                    return true;
                }
                answer = answers.message() => match answer {
                    Ok(Some(answer)) => self.answer(answer),
                    Ok(None) => {
                        self.fail(&Status::unavailable("the server closed the task-token stream; retry"));
                        return true;
                    }
                    Err(status) => {
                        self.fail(&status);
                        return true;
                    }
                },
                queued = queue.recv(), if self.pending.len() < MAX_IN_FLIGHT => match queued {
                    Some(first) => self.send(&tx, first, queue, metrics),
                    None => {
                        drop(tx);
                        self.drain(answers).await;
                        return false;
                    }
                },
            }
        }
    }

    /// Answers what is unanswered once no more batches will be sent.
    async fn drain(mut self, mut answers: Streaming<MintTaskTokensResponse>) {
        while !self.pending.is_empty() {
            match answers.message().await {
                Ok(Some(answer)) => self.answer(answer),
                Ok(None) => break,
                Err(status) => return self.fail(&status),
            }
        }
        self.fail(&Status::unavailable("the server closed the task-token stream; retry"));
    }

    /// Answers one batch's requests from the server's answer.
    fn answer(&mut self, answer: MintTaskTokensResponse) {
        let Some(replies) = self.pending.remove(&answer.batch) else {
            tracing::warn!(batch = answer.batch, "the server answered a task-token batch that was not sent");
            return;
        };
        let (expected, results) = (replies.len(), answer.results);
        if results.len() != expected {
            let n = results.len();
            let status = Status::internal(format!("the server answered {n} of {expected} task-token requests"));
            return fail(replies, &status);
        }
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(answer_of(result));
        }
    }

    /// Answers every unanswered request with `status`.
    fn fail(self, status: &Status) {
        fail(self.pending.into_values().flatten(), status);
    }
}

/// Answers each of `replies` with `status`.
fn fail(replies: impl IntoIterator<Item = oneshot::Sender<Result<TaskToken, Status>>>, status: &Status) {
    for reply in replies {
        let _ = reply.send(Err(status.clone()));
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

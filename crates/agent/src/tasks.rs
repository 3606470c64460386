//! The Tasks API (`lanyard.agent.v1.Tasks`) on the Workload API socket.
//!
//! The caller is attested exactly as for SVIDs, and the agent forwards the
//! call with every identity the caller is entitled to (and the caller's
//! current X.509-SVID for each, which binds the token). The server decides
//! which identity the task is for; the caller never names one.

use lanyard_proto::agent::tasks_server::Tasks;
use lanyard_proto::agent::{
    BeginTaskRequest, BeginTaskResponse, DelegateTaskRequest, DelegateTaskResponse, EndTaskRequest, EndTaskResponse,
    FetchTaskTokenRequest,
};
use lanyard_proto::common::TaskToken;
use lanyard_proto::node::node_client::NodeClient;
use lanyard_proto::node::{
    CallerIdentity, MintTaskTokenRequest, NodeBeginTaskRequest, NodeDelegateTaskRequest, NodeEndTaskRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::workload::{Caller, NO_IDENTITY, WorkloadApi};

impl WorkloadApi {
    /// Attests the caller: its identities, with their SVIDs.
    async fn caller_identities<T>(&self, req: &Request<T>) -> Result<Vec<CallerIdentity>, Status> {
        let Caller { snap, entries, .. } = self.caller(req).await?;
        let caller: Vec<CallerIdentity> = entries
            .iter()
            .filter_map(|e| {
                snap.svids.get(&e.id).map(|s| CallerIdentity { entry_id: e.id.to_string(), svid: s.leaf_der.clone() })
            })
            .collect();
        if caller.is_empty() {
            return Err(Status::unavailable("this workload's SVIDs are still being issued; retry"));
        }
        Ok(caller)
    }

    /// The caller's identities and a client to the server.
    async fn forwarding<T>(&self, req: &Request<T>) -> Result<(Vec<CallerIdentity>, NodeClient<Channel>), Status> {
        let caller = self.caller_identities(req).await?;
        Ok((caller, self.server_client().await?))
    }
}

/// The server's answer for the workload: refusals and bad input pass
/// through with their reason; anything else is the server being away.
fn relay(status: Status) -> Status {
    match status.code() {
        Code::InvalidArgument | Code::PermissionDenied | Code::NotFound => status,
        Code::Unauthenticated => Status::permission_denied(NO_IDENTITY),
        _ => Status::unavailable(format!("the server could not answer: {}", status.message())),
    }
}

#[tonic::async_trait]
impl Tasks for WorkloadApi {
    async fn begin_task(&self, req: Request<BeginTaskRequest>) -> Result<Response<BeginTaskResponse>, Status> {
        let (caller, mut client) = self.forwarding(&req).await?;
        let forwarded = NodeBeginTaskRequest { caller, request: Some(req.into_inner()) };
        Ok(Response::new(client.begin_task(forwarded).await.map_err(relay)?.into_inner()))
    }

    async fn fetch_task_token(&self, req: Request<FetchTaskTokenRequest>) -> Result<Response<TaskToken>, Status> {
        // Batched with other workloads' requests (see mint_batch).
        let caller = self.caller_identities(&req).await?;
        let forwarded = MintTaskTokenRequest { caller, request: Some(req.into_inner()) };
        Ok(Response::new(self.mints.mint(forwarded).await.map_err(relay)?))
    }

    async fn delegate_task(&self, req: Request<DelegateTaskRequest>) -> Result<Response<DelegateTaskResponse>, Status> {
        let (caller, mut client) = self.forwarding(&req).await?;
        let forwarded = NodeDelegateTaskRequest { caller, request: Some(req.into_inner()) };
        Ok(Response::new(client.delegate_task(forwarded).await.map_err(relay)?.into_inner()))
    }

    async fn end_task(&self, req: Request<EndTaskRequest>) -> Result<Response<EndTaskResponse>, Status> {
        let (caller, mut client) = self.forwarding(&req).await?;
        let forwarded = NodeEndTaskRequest { caller, request: Some(req.into_inner()) };
        Ok(Response::new(client.end_task(forwarded).await.map_err(relay)?.into_inner()))
    }
}

//! An MCP server (a "connector") that holds no standing secrets.
//!
//! It exposes one MCP tool, `search_issues`. Every call names the task the
//! MCP host began for its user; the connector asks its Lanyard agent for a
//! task token for exactly that tool and the tool service's audience, and
//! calls the tool service with it. It never forwards a token it was given —
//! MCP forbids token passthrough — and it never holds a token longer than the
//! call: the next call asks again, so a task ended or a session revoked in
//! between is refused at once.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use rmcp::ServiceExt;
//! let connector = lanyard_example_mcp_connector::Connector::new(
//!     "/run/lanyard/agent.sock".into(),
//!     "http://127.0.0.1:7000".parse()?,
//!     "api.github.example".into(),
//! );
//! connector.serve(rmcp::transport::stdio()).await?.waiting().await?;
//! # Ok(()) }
//! ```

mod http;

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use lanyard_proto::agent::FetchTaskTokenRequest;
use lanyard_proto::agent::tasks_client::TasksClient;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ErrorData};
use rmcp::{schemars, tool, tool_router};
use serde::Deserialize;
use tonic::transport::{Channel, Endpoint};

/// The Lanyard tool a `search_issues` call uses, and its action.
pub const TOOL: &str = "github.search";
/// The action it performs.
pub const ACTION: &str = "read";

/// The connector: where its agent is and which tool service it calls.
#[derive(Clone, Debug)]
pub struct Connector {
    agent_socket: PathBuf,
    tool_url: ::http::Uri,
    audience: String,
}

/// Arguments of `search_issues`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchArgs {
    /// The Lanyard task the MCP host began for this user's request.
    pub task: String,
    /// What to search for.
    pub query: String,
}

impl Connector {
    /// A connector whose agent listens on `agent_socket`, calling the tool
    /// service at `tool_url`, which expects tokens for `audience`.
    pub fn new(agent_socket: PathBuf, tool_url: ::http::Uri, audience: String) -> Self {
        Self { agent_socket, tool_url, audience }
    }

    /// A task token for `task`, for this one tool, from the agent: the agent
    /// attests this process; the connector never names its own identity.
    async fn task_token(&self, task: &str) -> Result<String, String> {
        let path = self.agent_socket.clone();
        let channel: Channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            }))
            .await
            .map_err(|e| format!("cannot reach the Lanyard agent: {e}"))?;
        let mut request = tonic::Request::new(FetchTaskTokenRequest {
            task_id: task.to_owned(),
            audience: self.audience.clone(),
            tools: vec![TOOL.to_owned()],
            action: ACTION.to_owned(),
            ttl_seconds: 60,
        });
        request.metadata_mut().insert("workload.spiffe.io", tonic::metadata::MetadataValue::from_static("true"));
        let token = TasksClient::new(channel)
            .fetch_task_token(request)
            .await
            .map_err(|s| format!("Lanyard refused a token for this task: {}", s.message()))?;
        Ok(token.into_inner().token)
    }
}

#[tool_router(server_handler)]
impl Connector {
    /// Searches issues through the tool service, with a token for this task only.
    #[tool(name = "search_issues", description = "Search issues. `task` is the Lanyard task of the user's request.")]
    async fn search_issues(&self, Parameters(args): Parameters<SearchArgs>) -> Result<CallToolResult, ErrorData> {
        if args.task.is_empty() {
            return Err(ErrorData::invalid_params("task is required", None));
        }
        let token = match self.task_token(&args.task).await {
            Ok(token) => token,
            Err(why) => return Ok(CallToolResult::error(vec![ContentBlock::text(why)])),
        };
        match http::get_search(&self.tool_url, &args.query, &token).await {
            Ok((200, body)) => Ok(CallToolResult::success(vec![ContentBlock::text(body)])),
            Ok((status, body)) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(format!("tool service answered {status}: {body}"))]))
            }
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(format!("tool service unreachable: {e}"))])),
        }
    }
}

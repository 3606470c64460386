//! `lanyard-mcp-connector`: the example connector as an MCP server on stdio.
//!
//! Environment: `SPIFFE_ENDPOINT_SOCKET` (the Lanyard agent, `unix:///path`),
//! `TOOL_SERVICE_URL` (e.g. `http://127.0.0.1:7000`), `TOOL_AUDIENCE`.

use rmcp::ServiceExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let socket = std::env::var("SPIFFE_ENDPOINT_SOCKET").unwrap_or_else(|_| "unix:///tmp/lanyard/agent.sock".into());
    let socket = socket.strip_prefix("unix://").unwrap_or(&socket).to_owned();
    let tool_url = std::env::var("TOOL_SERVICE_URL").unwrap_or_else(|_| "http://127.0.0.1:7000".into()).parse()?;
    let audience = std::env::var("TOOL_AUDIENCE").unwrap_or_else(|_| "api.github.example".into());
    let connector = lanyard_example_mcp_connector::Connector::new(socket.into(), tool_url, audience);
    connector.serve(rmcp::transport::stdio()).await?.waiting().await?;
    Ok(())
}

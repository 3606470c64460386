//! `lanyard-tool-service`: the example tool as an HTTP server.
//!
//! Environment: `LANYARD_BUNDLE_URL` (the issuer's bundle endpoint, e.g.
//! `http://127.0.0.1:8443`), `TOOL_AUDIENCE` (e.g. `api.github.example`),
//! `LISTEN` (default `127.0.0.1:7000`).

use anyhow::Context as _;
use lanyard_verify::{Endpoint, Verifier, VerifierConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let url = std::env::var("LANYARD_BUNDLE_URL").context("set LANYARD_BUNDLE_URL to the issuer's bundle endpoint")?;
    let audience = std::env::var("TOOL_AUDIENCE").unwrap_or_else(|_| "api.github.example".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:7000".into());
    let endpoint = Endpoint::new(&url, &[])?;
    let mut config = VerifierConfig::default();
    if let Some(issuer) = lanyard_verify::discovered_issuer(&endpoint).await? {
        config = config.issuer(issuer);
    }
    let verifier = Verifier::start(endpoint, config).await.context("cannot start the verifier")?;
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, %audience, "tool service ready");
    axum::serve(listener, lanyard_example_tool_service::router(verifier, &audience)).await?;
    Ok(())
}

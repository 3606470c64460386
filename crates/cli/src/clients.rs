//! Connections to the server's admin socket and the agent's Workload API.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use lanyard_proto::admin::admin_client::AdminClient;
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// A gRPC channel over the Unix socket at `path`.
async fn unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// A client for the server's admin API.
pub(crate) async fn admin(socket: &Path) -> anyhow::Result<AdminClient<Channel>> {
    check_socket_owner(socket)?;
    let channel = unix_channel(socket)
        .await
        .with_context(|| format!("cannot reach the server's admin socket {}", socket.display()))?;
    Ok(AdminClient::new(channel))
}

/// Refuses an admin socket that neither this user nor root owns: in a
/// shared directory (the default is under /tmp) another user could have put
/// their own socket there to collect what admin commands send.
fn check_socket_owner(socket: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(socket) else {
        // Missing: the connect fails with its own message.
        return Ok(());
    };
    // /proc/self belongs to the effective uid.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if meta.uid() != me && meta.uid() != 0 {
        bail!(
            "refusing the admin socket {}: it is owned by uid {}, not by you (uid {me}) or root",
            socket.display(),
            meta.uid()
        );
    }
    Ok(())
}

/// `unix:///path` or a plain path, as `SPIFFE_ENDPOINT_SOCKET` allows.
pub(crate) fn socket_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        if !path.starts_with('/') {
            bail!("socket address {endpoint:?} must be unix:///absolute/path");
        }
        return Ok(PathBuf::from(path));
    }
    if endpoint.contains("://") {
        bail!("socket address {endpoint:?}: only unix:// is supported");
    }
    Ok(PathBuf::from(endpoint))
}

/// A channel to the agent's socket (`unix:///path`).
pub(crate) async fn agent_channel(endpoint: &str) -> anyhow::Result<Channel> {
    let path = socket_path(endpoint)?;
    unix_channel(&path).await.with_context(|| format!("cannot reach the agent's socket {}", path.display()))
}

/// A client for the agent's Workload API.
pub(crate) async fn workload(endpoint: &str) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
    Ok(SpiffeWorkloadApiClient::new(agent_channel(endpoint).await?))
}

/// A Workload API request with the `workload.spiffe.io: true` header.
pub(crate) fn workload_request<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert(lanyard_proto::WORKLOAD_API_HEADER, tonic::metadata::MetadataValue::from_static("true"));
    req
}

/// A gRPC status as one readable line.
pub(crate) fn status_line(s: &tonic::Status) -> String {
    let code = match s.code() {
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::Aborted => "aborted",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::Unimplemented => "unimplemented",
        _ => "error",
    };
    format!("{code}: {}", s.message())
}

/// Adds the status line as context to a gRPC result.
pub(crate) trait StatusExt<T> {
    /// Maps a failed call to an error that reads `<what>: <code>: <message>`.
    fn or_status(self, what: &str) -> anyhow::Result<T>;
}

impl<T> StatusExt<T> for Result<tonic::Response<T>, tonic::Status> {
    fn or_status(self, what: &str) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner).map_err(|s| anyhow::anyhow!("{what}: {}", status_line(&s)))
    }
}

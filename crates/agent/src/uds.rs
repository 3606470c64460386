//! The Workload API's Unix socket: each accepted connection carries the
//! peer's kernel credentials (`SO_PEERCRED`) and the moment it connected, so
//! that attestation can tell the connecting process from a later one that
//! reused its PID.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::attest::{PeerInfo, boot_ticks};

/// A connection to the Workload API with what the kernel said about its peer.
#[derive(Debug)]
pub(crate) struct PeerStream {
    inner: UnixStream,
    peer: Option<PeerInfo>,
}

impl Connected for PeerStream {
    type ConnectInfo = Option<PeerInfo>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Binds the Workload API socket. Anyone may connect (0777, as SPIRE does):
/// what a caller gets is decided by attestation, not by file permissions. A
/// stale socket is replaced; a live one is an error.
pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "path exists and is not a socket"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "another agent is listening on it"));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}

/// Accepts connections, stamping each with its peer's credentials and the
/// boot-clock time of the accept.
pub(crate) fn incoming(listener: UnixListener) -> ReceiverStream<io::Result<PeerStream>> {
    let (tx, rx) = mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            let result = listener.accept().await.map(|(stream, _)| {
                let accepted_at = boot_ticks().ok();
                let peer = stream
                    .peer_cred()
                    .ok()
                    .and_then(|cred| Some(PeerInfo::accepted(cred.pid()?, cred.uid(), cred.gid(), accepted_at?)));
                PeerStream { inner: stream, peer }
            });
            if let Err(e) = &result {
                tracing::warn!(error = %e, "workload API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            if tx.send(result).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Raises the soft limit on open descriptors to the hard one, as Go's
/// runtime does for SPIRE's agent: each Workload API connection holds two
/// (its socket and its peer's pidfd), and the common soft limit of 1,024
/// would stop the agent near 500 connections. The limit in force after.
pub(crate) fn raise_fd_limit() -> rustix::process::Rlimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // No hard limit (None) cannot be the soft one for descriptors: leave it.
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
        && let Err(e) = setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) })
    {
        tracing::warn!(error = %e, hard, "could not raise the open descriptor limit");
    }
    getrlimit(Resource::Nofile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_one() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        let Some(hard) = before.maximum else { return };
        // Lowered by one first (not further: other tests in this process
        // hold descriptors), so the raise is exercised whatever the runner set.
        setrlimit(Resource::Nofile, Rlimit { current: Some(hard - 1), maximum: Some(hard) }).unwrap();
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard - 1));
        assert_eq!(raise_fd_limit().current, Some(hard));
    }
}

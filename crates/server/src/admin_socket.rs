//! Creating the admin socket with mode 0600 and no window in which it is
//! reachable with looser permissions.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::StartError;

/// Binds `path` as a Unix socket readable and writable by the owner only.
///
/// The socket is bound inside a fresh 0700 directory next to `path`, set to
/// 0600 there, then renamed into place, so nobody else can connect in the
/// moment between bind and chmod. A stale socket left by a dead server is
/// replaced; a live one is an error.
pub(crate) fn bind_private(path: &Path) -> Result<UnixListener, StartError> {
    let fail = |why: String| StartError::AdminSocket(path.to_path_buf(), why);
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
    remove_stale(path).map_err(fail)?;

    let staging = staging_dir(parent)?;
    let result = (|| {
        let tmp = staging.join("admin.sock");
        let listener = UnixListener::bind(&tmp).map_err(|e| fail(e.to_string()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(|e| fail(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn staging_dir(parent: &Path) -> Result<PathBuf, StartError> {
    let suffix = lanyard_ca::rand::bytes::<8>().map_err(|e| StartError::Keys(e.to_string()))?;
    let dir = parent.join(format!(".lanyard-admin-{}", lanyard_core::hex::encode(&suffix)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| StartError::AdminSocket(dir.clone(), e.to_string()))?;
    Ok(dir)
}

use std::os::unix::fs::DirBuilderExt;

fn remove_stale(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err("path exists and is not a socket".into());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err("another server is listening on it".into());
    }
    std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket: {e}"))
}

/// The effective uid of this process (the owner of `/proc/self`).
pub(crate) fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

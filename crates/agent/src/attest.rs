//! Workload attestation: what the kernel says about the process at the other
//! end of a Workload API connection.
//!
//! The uid, gid and pid come from `SO_PEERCRED`, captured by the kernel when
//! the peer connected. Everything else is read from `/proc/<pid>`, which
//! names whatever process holds that pid *now*. At the accept the process
//! is pinned with a pidfd, if it started no later than the accept: from then
//! on a call checks the pidfd (has the process exited?) instead of reading
//! its start time again, and a pid reused by a newer process can never pass
//! for it. Without a pidfd (an older kernel, or a process that started after
//! the accept) the start time is read before and after on every call, and a
//! process that started after the accept is refused.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use lanyard_core::Selector;
use ring::digest::{Context, SHA256};

/// Clock ticks per second in `/proc` (Linux `USER_HZ`, 100 on every
/// architecture Lanyard runs on).
pub const USER_HZ: u64 = 100;
/// Most executables whose digests are remembered.
pub const DIGEST_CACHE_SIZE: usize = 1024;
/// How long a full attestation of one process is reused (see [`attest`]).
pub const REATTEST_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// Most processes whose recent attestation is remembered.
pub const RECENT_CACHE_SIZE: usize = 4096;

/// The peer of a Workload API connection, from the kernel.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Process id at connect time.
    pub pid: i32,
    /// Effective uid at connect time.
    pub uid: u32,
    /// Effective gid at connect time.
    pub gid: u32,
    /// Boot-clock ticks when the connection was accepted.
    pub accepted_at_ticks: u64,
    /// The process itself, when it could be pinned at the accept.
    pinned: Option<Pinned>,
}

/// A peer process held by a pidfd, and its start time.
#[derive(Clone, Debug)]
struct Pinned {
    pidfd: Arc<OwnedFd>,
    start: u64,
}

impl PeerInfo {
    /// The peer of a connection just accepted, as `SO_PEERCRED` names it,
    /// pinned by a pidfd when the process holding `pid` now had started by
    /// `accepted_at_ticks` (and so is the one that connected).
    pub fn accepted(pid: i32, uid: u32, gid: u32, accepted_at_ticks: u64) -> Self {
        let mut peer = Self { pid, uid, gid, accepted_at_ticks, pinned: None };
        peer.pinned = pin(&peer);
        peer
    }
}

/// A pidfd for the peer, with its start time: `None` if the process is gone,
/// started after the accept, or cannot be opened (pidfds need Linux 5.3).
fn pin(peer: &PeerInfo) -> Option<Pinned> {
    let pid = rustix::process::Pid::from_raw(peer.pid)?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    let start = start_ticks(peer.pid).ok()?;
    // The start time read was the pinned process's only if it still runs
    // (a pid is not reused before its process is reaped).
    let pinned = Pinned { pidfd: Arc::new(pidfd), start };
    (start <= peer.accepted_at_ticks + 1 && running(&pinned)).then_some(pinned)
}

/// Whether the pinned process has not exited: its pidfd turns readable when it does.
fn running(pinned: &Pinned) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&*pinned.pidfd, PollFlags::IN)];
    matches!(rustix::event::poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 0 })), Ok(0))
}

/// Why a caller could not be attested.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// No peer credentials on the connection (not a Unix socket peer).
    #[error("caller credentials are unavailable")]
    NoCredentials,
    /// The process is gone.
    #[error("caller process {0} has exited")]
    Gone(i32),
    /// The pid now belongs to a process that started after the connection.
    #[error("caller pid {0} was reused by another process")]
    PidReused(i32),
    /// The process's effective uid/gid no longer match its connect-time credentials.
    #[error("caller process {0} changed credentials since it connected")]
    CredentialsChanged(i32),
    /// A /proc file could not be parsed.
    #[error("cannot read /proc/{0}: {1}")]
    Proc(i32, String),
}

/// Device, inode, size, mtime seconds and nanoseconds: what identifies a
/// file's content on disk without reading it.
type FileKey = (u64, u64, u64, i64, i64);

/// What attestation remembers between calls: executable digests (keyed by
/// [`FileKey`]) and the user and group databases (re-read when they change).
#[derive(Default)]
pub struct AttestCache {
    digests: Mutex<HashMap<FileKey, [u8; 32]>>,
    passwd: NameDb,
    group: NameDb,
    recent: Mutex<HashMap<ProcessKey, Recent>>,
}

/// A process as the kernel identifies it over time: pid and start time (a
/// reused pid has a later one), with the connection's uid and gid.
type ProcessKey = (i32, u64, u32, u32);

/// A full attestation, reused for [`REATTEST_AFTER`] while the process still
/// runs the same executable.
struct Recent {
    at: std::time::Instant,
    exe: Option<std::path::PathBuf>,
    with_digest: bool,
    selectors: Vec<Selector>,
}

/// A copy of `/etc/passwd` or `/etc/group`, with the mtime it was read at.
#[derive(Default)]
struct NameDb {
    copy: Mutex<Option<(std::time::SystemTime, std::sync::Arc<str>)>>,
}

impl NameDb {
    fn name_of(&self, path: &str, id: u32) -> Option<String> {
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
        let text = {
            let mut copy = self.copy.lock().ok()?;
            match copy.as_ref() {
                Some((t, text)) if *t == mtime => std::sync::Arc::clone(text),
                _ => {
                    let text: std::sync::Arc<str> = std::fs::read_to_string(path).ok()?.into();
                    *copy = Some((mtime, std::sync::Arc::clone(&text)));
                    text
                }
            }
        };
        name_of(&text, id)
    }
}

/// Attests the connection's peer: the selectors that describe it. The
/// executable is hashed only when `need_digest` (some entry asks for it).
///
/// A full attestation reads the process's credentials and executable, and
/// checks that the process still holds the pid (a dozen syscalls). Within
/// [`REATTEST_AFTER`] of one, a call from the same process — same pid and
/// start time, same connection credentials, same executable — reuses it,
/// checking only the executable and that the process still holds the pid
/// (two syscalls with a pidfd: readlink and poll; four without). A
/// process that replaced its binary (exec) is attested afresh at once; one
/// that changed credentials without exec is caught within a second, as it
/// would be at its next connection.
pub fn attest(peer: Option<&PeerInfo>, need_digest: bool, cache: &AttestCache) -> Result<Vec<Selector>, AttestError> {
    let peer = peer.ok_or(AttestError::NoCredentials)?;
    let pid = peer.pid;
    let start = match &peer.pinned {
        Some(pinned) => pinned.start,
        None => {
            let start = start_ticks(pid)?;
            // Start times are truncated to ticks, the accept time too: allow one tick.
            if start > peer.accepted_at_ticks + 1 {
                return Err(AttestError::PidReused(pid));
            }
            start
        }
    };
    // The executable is readable only with the process's uid or privilege;
    // without it the caller simply has no path or digest selectors.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    if peer.pinned.is_some() {
        // What /proc/<pid> showed was the pinned process's if it still runs.
        still_the_peer(peer, start)?;
    }
    let key = (pid, start, peer.uid, peer.gid);
    if let Ok(recent) = cache.recent.lock()
        && let Some(hit) = recent.get(&key)
        && hit.at.elapsed() < REATTEST_AFTER
        && hit.exe == exe
        && (hit.with_digest || !need_digest)
    {
        return Ok(hit.selectors.clone());
    }
    let selectors = attest_fully(peer, start, exe.as_deref(), need_digest, cache)?;
    if let Ok(mut recent) = cache.recent.lock() {
        if recent.len() >= RECENT_CACHE_SIZE {
            recent.clear();
        }
        let entry =
            Recent { at: std::time::Instant::now(), exe, with_digest: need_digest, selectors: selectors.clone() };
        recent.insert(key, entry);
    }
    Ok(selectors)
}

fn attest_fully(
    peer: &PeerInfo,
    start: u64,
    exe: Option<&std::path::Path>,
    need_digest: bool,
    cache: &AttestCache,
) -> Result<Vec<Selector>, AttestError> {
    let pid = peer.pid;
    let status = read_proc(pid, "status")?;
    let (euid, egid) = parse_status_ids(&status).ok_or_else(|| AttestError::Proc(pid, "status: no Uid/Gid".into()))?;
    if euid != peer.uid || egid != peer.gid {
        return Err(AttestError::CredentialsChanged(pid));
    }
    let mut selectors = vec![Selector::Uid(peer.uid), Selector::Gid(peer.gid)];
    if let Some(name) = cache.passwd.name_of("/etc/passwd", peer.uid) {
        selectors.extend(Selector::parse(&format!("unix:user:{name}")).ok());
    }
    if let Some(name) = cache.group.name_of("/etc/group", peer.gid) {
        selectors.extend(Selector::parse(&format!("unix:group:{name}")).ok());
    }
    if let Some(path) = exe {
        if let Some(path) = path.to_str() {
            selectors.extend(Selector::parse(&format!("unix:path:{path}")).ok());
        }
        if need_digest && let Some(d) = exe_digest(pid, cache) {
            selectors.push(Selector::Sha256(d));
        }
    }
    // The same process must still hold the pid after all those reads.
    still_the_peer(peer, start)?;
    Ok(selectors)
}

/// Fails unless the process that started at `start` still holds the peer's
/// pid: the pidfd says so when the peer is pinned, its start time otherwise.
fn still_the_peer(peer: &PeerInfo, start: u64) -> Result<(), AttestError> {
    match &peer.pinned {
        Some(pinned) if running(pinned) => Ok(()),
        Some(_) => Err(AttestError::Gone(peer.pid)),
        None if start_ticks(peer.pid)? == start => Ok(()),
        None => Err(AttestError::PidReused(peer.pid)),
    }
}

/// Boot-clock ticks now (`/proc/uptime`, the clock `/proc/<pid>/stat` counts in).
pub fn boot_ticks() -> std::io::Result<u64> {
    let text = std::fs::read_to_string("/proc/uptime")?;
    parse_uptime_ticks(&text).ok_or_else(|| std::io::Error::other("unparsable /proc/uptime"))
}

fn read_proc(pid: i32, file: &str) -> Result<String, AttestError> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AttestError::Gone(pid),
        _ => AttestError::Proc(pid, format!("{file}: {e}")),
    })
}

fn start_ticks(pid: i32) -> Result<u64, AttestError> {
    let mut buf = [0u8; STAT_BUF];
    let stat = read_stat(pid, &mut buf)?;
    parse_stat_start(stat).ok_or_else(|| AttestError::Proc(pid, "stat: no start time".into()))
}

/// Longest `/proc/<pid>/stat` read: the line is a 16-byte command name and
/// 51 numbers, under 400 bytes.
const STAT_BUF: usize = 1024;

/// `/proc/<pid>/stat` into `buf`: open, read, close. Read on every call, so
/// without `fs::read_to_string`'s extra `statx` and reads to the end: the
/// kernel hands over the whole line in one read.
fn read_stat(pid: i32, buf: &mut [u8; STAT_BUF]) -> Result<&[u8], AttestError> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => AttestError::Gone(pid),
        _ => AttestError::Proc(pid, format!("stat: {e}")),
    };
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).map_err(io)?;
    let mut len = 0;
    while len < buf.len() && !buf[..len].ends_with(b"\n") {
        match file.read(&mut buf[len..]).map_err(io)? {
            0 => break,
            n => len += n,
        }
    }
    Ok(&buf[..len])
}

fn exe_digest(pid: i32, cache: &AttestCache) -> Option<[u8; 32]> {
    let mut file = std::fs::File::open(format!("/proc/{pid}/exe")).ok()?;
    let meta = file.metadata().ok()?;
    let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec());
    if let Some(d) = cache.digests.lock().ok()?.get(&key) {
        return Some(*d);
    }
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let digest: [u8; 32] = ctx.finish().as_ref().try_into().ok()?;
    let mut map = cache.digests.lock().ok()?;
    if map.len() >= DIGEST_CACHE_SIZE {
        map.clear();
    }
    map.insert(key, digest);
    Some(digest)
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`. The command name (field 2)
/// may contain spaces, parentheses and bytes that are not UTF-8, so fields
/// are counted from the last `)`.
pub fn parse_stat_start(stat: &[u8]) -> Option<u64> {
    let after_comm = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    std::str::from_utf8(after_comm).ok()?.split_whitespace().nth(19)?.parse().ok()
}

/// Effective uid and gid from `/proc/<pid>/status`.
pub fn parse_status_ids(status: &str) -> Option<(u32, u32)> {
    let field = |name: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(2)?.parse().ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// The name for `id` in an `/etc/passwd` or `/etc/group` file.
pub fn name_of(db: &str, id: u32) -> Option<String> {
    db.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let line_id: u32 = fields.next()?.parse().ok()?;
        (line_id == id && !name.is_empty()).then(|| name.to_owned())
    })
}

/// `/proc/uptime`'s first field, in ticks.
pub fn parse_uptime_ticks(uptime: &str) -> Option<u64> {
    let secs = uptime.split_whitespace().next()?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, "0"));
    let whole: u64 = whole.parse().ok()?;
    let centis: u64 = format!("{frac:0<2}").get(..2)?.parse().ok()?;
    Some(whole * USER_HZ + centis * USER_HZ / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let stat = b"1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200 ...";
        assert_eq!(parse_stat_start(stat), Some(98765));
        let not_utf8 = b"1234 (\xff\xfe)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200 ...";
        assert_eq!(parse_stat_start(not_utf8), Some(98765));
        assert_eq!(parse_stat_start(b"garbage"), None);
    }

    #[test]
    fn parses_status_ids() {
        let status = "Name:\tx\nUid:\t1000\t1001\t1000\t1000\nGid:\t100\t101\t100\t100\n";
        assert_eq!(parse_status_ids(status), Some((1001, 101)));
        assert_eq!(parse_status_ids("Name:\tx\n"), None);
    }

    #[test]
    fn looks_up_names() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbad line\n";
        assert_eq!(name_of(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(name_of(passwd, 0).as_deref(), Some("root"));
        assert_eq!(name_of(passwd, 5), None);
    }

    #[test]
    fn parses_uptime() {
        assert_eq!(parse_uptime_ticks("12345.67 999.00\n"), Some(1_234_567));
        assert_eq!(parse_uptime_ticks("5.5 1"), Some(550));
        assert_eq!(parse_uptime_ticks("x"), None);
    }

    #[test]
    fn attests_this_process() {
        let me = std::process::id() as i32;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let (uid, gid) = parse_status_ids(&status).unwrap();
        let peer = PeerInfo::accepted(me, uid, gid, boot_ticks().unwrap());
        assert!(peer.pinned.is_some(), "a process that started before the accept is pinned");
        // Pinned, and without a pidfd (the start time read on every call): the same selectors.
        let selectors = attest(Some(&peer), true, &AttestCache::default()).unwrap();
        let unpinned = PeerInfo { pinned: None, ..peer.clone() };
        assert_eq!(attest(Some(&unpinned), true, &AttestCache::default()).unwrap(), selectors);
        assert!(selectors.contains(&Selector::Uid(uid)));
        assert!(selectors.contains(&Selector::Gid(gid)));
        let exe = std::env::current_exe().unwrap();
        assert!(selectors.contains(&Selector::Path(exe.to_str().unwrap().to_owned())));
        assert!(selectors.iter().any(|s| matches!(s, Selector::Sha256(_))));
    }

    #[test]
    fn refuses_a_process_that_started_after_the_connection() {
        let me = std::process::id() as i32;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let (uid, gid) = parse_status_ids(&status).unwrap();
        // The connection "was accepted" before this process started.
        let peer = PeerInfo::accepted(me, uid, gid, 0);
        assert!(peer.pinned.is_none(), "a process that started after the accept is not pinned");
        assert!(matches!(attest(Some(&peer), false, &AttestCache::default()), Err(AttestError::PidReused(_))));
    }

    #[test]
    fn reuses_a_recent_attestation_only_for_the_same_process() {
        let me = std::process::id() as i32;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let (uid, gid) = parse_status_ids(&status).unwrap();
        let peer = PeerInfo::accepted(me, uid, gid, boot_ticks().unwrap());
        let cache = AttestCache::default();
        let first = attest(Some(&peer), false, &cache).unwrap();
        assert_eq!(cache.recent.lock().unwrap().len(), 1);
        assert_eq!(attest(Some(&peer), false, &cache).unwrap(), first);
        // Asking for a digest the cached attestation did not take attests again.
        let with_digest = attest(Some(&peer), true, &cache).unwrap();
        assert!(with_digest.iter().any(|s| matches!(s, Selector::Sha256(_))));
        // An entry for another executable is not reused.
        let key = *cache.recent.lock().unwrap().keys().next().unwrap();
        cache.recent.lock().unwrap().get_mut(&key).unwrap().exe = Some("/usr/bin/other".into());
        let again = attest(Some(&peer), true, &cache).unwrap();
        assert_eq!(again, with_digest);
        assert_ne!(cache.recent.lock().unwrap()[&key].exe.as_deref(), Some(std::path::Path::new("/usr/bin/other")));
        // A stale one is not reused either.
        cache.recent.lock().unwrap().get_mut(&key).unwrap().at -= REATTEST_AFTER;
        cache.recent.lock().unwrap().get_mut(&key).unwrap().selectors.clear();
        assert_eq!(attest(Some(&peer), true, &cache).unwrap(), with_digest);
    }

    #[test]
    fn refuses_changed_credentials_and_missing_peers() {
        let me = std::process::id() as i32;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let (uid, gid) = parse_status_ids(&status).unwrap();
        let peer = PeerInfo::accepted(me, uid.wrapping_add(1), gid, boot_ticks().unwrap());
        assert!(matches!(attest(Some(&peer), false, &AttestCache::default()), Err(AttestError::CredentialsChanged(_))));
        assert!(matches!(attest(None, false, &AttestCache::default()), Err(AttestError::NoCredentials)));
    }

    #[test]
    fn a_pinned_process_that_exits_is_gone_whether_or_not_it_was_reaped() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let (uid, gid) = parse_status_ids(&status).unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let peer = PeerInfo::accepted(pid, uid, gid, boot_ticks().unwrap());
        assert!(peer.pinned.is_some());
        let cache = AttestCache::default();
        assert!(attest(Some(&peer), false, &cache).unwrap().contains(&Selector::Uid(uid)));
        child.kill().unwrap();
        // Exited but not reaped: the pid still names it (a zombie), and the
        // recent attestation in the cache must not be reused for it.
        while !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap().contains(") Z ") {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(matches!(attest(Some(&peer), false, &cache), Err(AttestError::Gone(p)) if p == pid));
        // Reaped: the pid is free for any new process, which is never taken for this one.
        child.wait().unwrap();
        assert!(matches!(attest(Some(&peer), false, &cache), Err(AttestError::Gone(p)) if p == pid));
    }
}

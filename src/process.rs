//! What a long-running `hark serve` asks of its operating system: as many file descriptors as
//! it may have, and the database file to itself.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Raises the soft limit of open file descriptors to the hard limit (every connection is one),
/// and returns the soft limit in force, if it can be read.
#[cfg(unix)]
pub fn raise_descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::warn!(
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                "cannot raise the open file limit"
            );
        }
    }
    // `rlim_t` is not `u64` on every unix.
    #[allow(clippy::unnecessary_cast)]
    Some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
pub fn raise_descriptor_limit() -> Option<u64> {
    None
}

/// Descriptors kept for what is not a client connection: the database and its WAL, the read
/// connections, model providers, logs.
const DESCRIPTORS_RESERVED: u64 = 64;

/// The connection cap the descriptor limit allows: `wanted`, or fewer (with a warning).
pub fn connections_allowed(wanted: usize, descriptors: Option<u64>) -> usize {
    let Some(descriptors) = descriptors else {
        return wanted;
    };
    let room = descriptors.saturating_sub(DESCRIPTORS_RESERVED).max(1) as usize;
    if room < wanted {
        tracing::warn!(
            max_connections = wanted,
            descriptors,
            allowed = room,
            "[limits] max_connections is more than the open file limit allows: lowered"
        );
        return room;
    }
    wanted
}

/// An exclusive hold on a database file, released when the process ends (even by `kill -9`).
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
}

/// Takes the database's lock file (`<db>.lock`, beside it), or says who holds it: two processes
/// on one file would each keep their own copy of the conversations' state.
pub fn lock_database(db: &Path, holder: &str) -> anyhow::Result<DatabaseLock> {
    let path = lock_path(db);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DatabaseLock { _file: file }),
        Err(TryLockError::WouldBlock) => bail!(
            "the database {} is in use by another hark process (it holds {}): {holder}",
            db.display(),
            path.display()
        ),
        Err(TryLockError::Error(error)) => Err(error)
            .with_context(|| format!("cannot lock the database's lock file {}", path.display())),
    }
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

//! An output directory held by one run at a time.
//!
//! [`OutputLock::acquire`] creates `kiln.lock` in the directory with `create_new` (atomic: of two
//! runs only one creates it) and writes the owner's process id into it; dropping the lock removes
//! the file. A lock whose owner is no longer alive (a run killed with SIGKILL) is stale: the next
//! run replaces it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Result, TrainError};

/// Name of the lock file inside an output directory.
pub const LOCK_FILE: &str = "kiln.lock";

/// Exclusive use of an output directory, released when dropped.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
}

impl OutputLock {
    /// Takes the lock of `dir` (created if needed).
    ///
    /// # Errors
    /// [`TrainError::Locked`] naming the lock file and the owner's process id when a live
    /// process holds it; an I/O error naming the file.
    pub fn acquire(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
        let path = dir.join(LOCK_FILE);
        // Two tries: the second after removing a stale lock.
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(format!("{}\n", std::process::id()).as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(TrainError::io(&path))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    match text.trim().parse::<u32>() {
                        Ok(pid) if process_alive(pid) => {
                            return Err(TrainError::Locked { path, pid });
                        }
                        // A dead owner, or a file cut short before the id was written.
                        _ => match fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(TrainError::io(&path)(e)),
                        },
                    }
                }
                Err(e) => return Err(TrainError::io(&path)(e)),
            }
        }
        let pid = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        Err(TrainError::Locked { path, pid })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether a process with this id exists. Linux answers through `/proc`; other Unix systems
/// through `kill -0`; elsewhere every owner counts as alive (a stale lock is removed by hand).
fn process_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    if Path::new("/proc/self").exists() {
        return Path::new(&format!("/proc/{pid}")).exists();
    }
    if cfg!(unix) {
        return std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .map_or(true, |s| s.success());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_lock_refuses_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let lock = OutputLock::acquire(dir.path()).unwrap();
        let written = fs::read_to_string(lock.path()).unwrap();
        assert_eq!(written.trim(), std::process::id().to_string());
        let err = OutputLock::acquire(dir.path()).unwrap_err();
        assert!(
            matches!(&err, TrainError::Locked { pid, .. } if *pid == std::process::id()),
            "{err}"
        );
        assert!(err.to_string().contains(LOCK_FILE), "{err}");
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());

        // A process id that cannot be alive (above Linux's pid_max).
        fs::write(dir.path().join(LOCK_FILE), "4194305\n").unwrap();
        let lock = OutputLock::acquire(dir.path()).unwrap();
        let written = fs::read_to_string(lock.path()).unwrap();
        assert_eq!(written.trim(), std::process::id().to_string());
    }
}

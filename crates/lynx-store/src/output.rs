//! Writing outputs without ever leaving a half-written one behind.
//!
//! A [`StagedPath`] is a temporary sibling of the target (same folder, so the final
//! rename stays on one file system): the writer fills it, [`StagedPath::commit`] renames
//! it over the target in one step, and dropping it uncommitted (an error, a panic, a
//! cancelled run) removes it. An existing target is replaced only as a whole: a file by
//! `rename(2)`, a folder (a PNG sequence) by moving the old one aside first.
//!
//! A process that ends without unwinding (a second Ctrl-C, `std::process::exit`) drops
//! nothing: it calls [`remove_uncommitted`] first, which removes every staged path of
//! the process not committed yet.
//!
//! [`check_writable`] is the check a long run does before its first step, so that an
//! output path that cannot be written fails in a moment instead of after the sampling.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use lynx_core::error::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary paths of the live, uncommitted [`StagedPath`]s of this process.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn forget(tmp: &Path) {
    let mut live = live();
    if let Some(i) = live.iter().position(|p| p == tmp) {
        live.swap_remove(i);
    }
}

fn remove_path(tmp: &Path) {
    if tmp.is_dir() {
        let _ = std::fs::remove_dir_all(tmp);
    } else {
        let _ = std::fs::remove_file(tmp);
    }
}

/// Removes the temporary file or folder of every [`StagedPath`] of this process that is
/// not committed yet, for a process about to end without unwinding (e.g. on a second
/// Ctrl-C); returns how many there were. Their targets are left as they were.
pub fn remove_uncommitted() -> usize {
    let mut live = live();
    for tmp in live.iter() {
        remove_path(tmp);
    }
    let n = live.len();
    live.clear();
    n
}

/// A temporary path that becomes `target` on [`StagedPath::commit`] and disappears if
/// dropped before.
#[derive(Debug)]
pub struct StagedPath {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl StagedPath {
    /// A fresh temporary name beside `target` (`.<name>.<pid>-<n>.tmp`); nothing is
    /// created yet.
    pub fn new(target: impl AsRef<Path>) -> Result<Self> {
        let target = target.as_ref().to_path_buf();
        let name = target
            .file_name()
            .ok_or_else(|| Error::output(&target, format!("{} names no file", target.display())))?
            .to_string_lossy()
            .into_owned();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = target.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()));
        live().push(tmp.clone());
        Ok(Self {
            target,
            tmp,
            committed: false,
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the written file or folder to the target, replacing what was there.
    pub fn commit(mut self) -> Result<()> {
        if self.tmp.is_dir() && self.target.is_dir() {
            // Folders cannot be renamed over non-empty folders: move the old one aside.
            let old = self.target.with_file_name(format!(
                "{}.old",
                self.tmp.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::rename(&self.target, &old).map_err(|e| Error::io(&self.target, e))?;
            if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
                let _ = std::fs::rename(&old, &self.target);
                return Err(Error::io(&self.target, e));
            }
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        self.committed = true;
        forget(&self.tmp);
        Ok(())
    }
}

impl Drop for StagedPath {
    fn drop(&mut self) {
        if !self.committed {
            remove_path(&self.tmp);
            forget(&self.tmp);
        }
    }
}

/// Checks, before a run, that `target` can be written: its folder exists and accepts a
/// new file, and `target` itself is not a folder (unless `folder` output is wanted) nor
/// read-only ([`Error::Output`] otherwise). Nothing is left behind.
pub fn check_writable(target: impl AsRef<Path>, folder: bool) -> Result<()> {
    let target = target.as_ref();
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::output(
            target,
            format!(
                "the folder of the output {} does not exist ({})",
                target.display(),
                parent.display()
            ),
        ));
    }
    if target.is_dir() && !folder {
        return Err(Error::output(
            target,
            format!(
                "the output {} is a folder; give a file name",
                target.display()
            ),
        ));
    }
    if let Ok(meta) = std::fs::metadata(target)
        && meta.permissions().readonly()
    {
        return Err(Error::output(
            target,
            format!("cannot write {}: the file is read-only", target.display()),
        ));
    }
    let probe = StagedPath::new(target)?;
    std::fs::write(probe.path(), b"").map_err(|e| {
        Error::output(
            target,
            format!(
                "cannot write {}: cannot create files in {}: {e}",
                target.display(),
                parent.display()
            ),
        )
    })?;
    drop(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lynx-output-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn staged_files_appear_only_on_commit() {
        let d = dir("file");
        let target = d.join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        let staged = StagedPath::new(&target).unwrap();
        std::fs::write(staged.path(), b"new").unwrap();
        drop(staged);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        let staged = StagedPath::new(&target).unwrap();
        std::fs::write(staged.path(), b"new").unwrap();
        staged.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn staged_folders_replace_whole_folders() {
        let d = dir("folder");
        let target = d.join("frames");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("stale.png"), b"x").unwrap();
        let staged = StagedPath::new(&target).unwrap();
        std::fs::create_dir(staged.path()).unwrap();
        std::fs::write(staged.path().join("frame_0000.png"), b"y").unwrap();
        staged.commit().unwrap();
        assert!(target.join("frame_0000.png").is_file() && !target.join("stale.png").exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    }

    #[test]
    fn unwritable_outputs_fail_up_front() {
        let d = dir("check");
        assert!(check_writable(d.join("ok.mp4"), false).is_ok());
        let err = check_writable(d.join("missing/out.mp4"), false).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = check_writable(&d, false).unwrap_err();
        assert!(err.to_string().contains("is a folder"), "{err}");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            0,
            "the probe is gone"
        );
    }
}

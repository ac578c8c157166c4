//! The on-disk layout of `huggingface_hub`'s cache for one repo (see the module docs of
//! [`crate`]), read and written as Python does.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use lynx_core::error::{Error, Result};

/// Paths of one model repo in the hub cache.
pub(crate) struct RepoCache {
    root: PathBuf,
    folder: String,
    dir: PathBuf,
}

/// `a/b/c` as a native relative path.
fn native(path: &str) -> PathBuf {
    path.split('/').collect()
}

impl RepoCache {
    pub(crate) fn new(cache_dir: &Path, repo_id: &str) -> Self {
        let folder = format!("models--{}", repo_id.replace('/', "--"));
        RepoCache {
            root: cache_dir.to_path_buf(),
            dir: cache_dir.join(&folder),
            folder,
        }
    }

    /// `models--{org}--{name}`.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    pub(crate) fn snapshot_file(&self, commit: &str, path: &str) -> PathBuf {
        self.snapshot_dir(commit).join(native(path))
    }

    pub(crate) fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    pub(crate) fn incomplete(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub(crate) fn lock_path(&self, etag: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(&self.folder)
            .join(format!("{etag}.lock"))
    }

    /// The commit `refs/{revision}` holds, if the cache has it.
    pub(crate) fn read_ref(&self, revision: &str) -> Option<String> {
        let text = fs::read_to_string(self.dir.join("refs").join(native(revision))).ok()?;
        let commit = text.trim();
        (!commit.is_empty()).then(|| commit.to_string())
    }

    /// Records that `revision` points at `commit` (nothing for a commit hash, nor when
    /// the ref already says so: a read-only cache stays usable).
    pub(crate) fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit || self.read_ref(revision).as_deref() == Some(commit) {
            return Ok(());
        }
        write_atomic(
            &self.dir.join("refs").join(native(revision)),
            commit.as_bytes(),
        )
    }

    fn no_exist_path(&self, commit: &str, path: &str) -> PathBuf {
        self.dir.join(".no_exist").join(commit).join(native(path))
    }

    /// Whether the Hub said earlier that `path` does not exist at `commit`.
    pub(crate) fn is_known_absent(&self, commit: &str, path: &str) -> bool {
        self.no_exist_path(commit, path).is_file()
    }

    /// Remembers that `path` does not exist at `commit` (best effort, as in Python).
    pub(crate) fn mark_absent(&self, commit: &str, path: &str) {
        let marker = self.no_exist_path(commit, path);
        if let Some(parent) = marker.parent() {
            let _ = fs::create_dir_all(parent).and_then(|()| File::create(&marker).map(drop));
        }
    }

    /// Points `snapshots/{commit}/{path}` at `blobs/{etag}`: a relative symlink, else a
    /// hard link, else a copy. An existing entry (a dangling link) is replaced atomically.
    pub(crate) fn link(&self, etag: &str, commit: &str, path: &str) -> Result<PathBuf> {
        let blob = self.blob(etag);
        let pointer = self.snapshot_file(commit, path);
        let parent = pointer.parent().expect("snapshot paths have a parent");
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let tmp = sibling_tmp(&pointer);
        let _ = fs::remove_file(&tmp);
        let depth = path.split('/').count();
        let mut target = PathBuf::new();
        for _ in 0..=depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if symlink(&target, &tmp).is_err() && fs::hard_link(&blob, &tmp).is_err() {
            fs::copy(&blob, &tmp).map_err(|e| Error::io(&blob, e))?;
        }
        fs::rename(&tmp, &pointer).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(&pointer, e)
        })?;
        Ok(pointer)
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

#[cfg(not(any(unix, windows)))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// `{path}.{pid}-{n}.tmp`, beside `path`: unique to this process and call.
fn sibling_tmp(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = sibling_tmp(path);
    let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// An exclusive lock on `path` (created if needed), held until dropped. Uses the OS
/// file lock (`flock` on Unix), as Python's `filelock` does, so Python and lynx-rs
/// never download the same blob at once.
pub(crate) struct Lock(File);

impl Lock {
    pub(crate) fn acquire(path: &Path) -> Result<Lock> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        match file.lock() {
            // A file system without locks (some network mounts): go on unlocked.
            Err(e) if e.kind() != std::io::ErrorKind::Unsupported => Err(Error::io(path, e)),
            _ => Ok(Lock(file)),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

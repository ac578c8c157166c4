//! Model folders from the Hugging Face Hub, kept in the cache Python's `huggingface_hub`
//! uses, so that a model downloaded by either is found by the other.
//!
//! [`resolve`] takes what a user typed for a model: a local folder (used as it is) or a
//! Hub repo id with an optional revision (`Wan-AI/Wan2.1-T2V-14B-Diffusers`,
//! `ByteDance/lynx@<branch, tag or commit>`). For a repo it fetches only the files a
//! [`FileSet`] names (the pipeline knows which files a Wan folder or a Lynx
//! adapter folder needs), reading shard indexes first to
//! learn which shards to fetch, and returns the snapshot folder (or its subfolder) that
//! now holds them. [`fetch_url`] does the same for a plain URL (facexlib's detector).
//!
//! What it mirrors:
//!
//! | piece | reference |
//! |---|---|
//! | environment ([`HubOptions::from_env`]) | `huggingface_hub/constants.py`: `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_TOKEN_PATH`, `HF_HUB_OFFLINE`, `HF_HUB_DOWNLOAD_TIMEOUT` |
//! | requests | `file_download.py` `hf_hub_download`: `HEAD {endpoint}/{repo}/resolve/{revision}/{path}` following same-host redirects only, `x-repo-commit`, `x-linked-etag`/`etag`, `x-linked-size`/`content-length`, then `GET` of the CDN location without the token; `X-Error-Code` (`GatedRepo`, `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) |
//! | cache layout | `huggingface_hub` (and the `hf-hub` crate), below |
//!
//! ```text
//! {cache_dir}/models--{org}--{name}/
//!     blobs/{etag}                 a complete file; `{etag}.incomplete` while it downloads
//!     refs/{revision}              the commit a branch or tag pointed at when last asked
//!     snapshots/{commit}/{path}    symlink to ../../blobs/{etag}, or a plain file
//!     .no_exist/{commit}/{path}    empty: the Hub said 404 for this file at this commit
//! {cache_dir}/.locks/models--{org}--{name}/{etag}.lock
//! ```
//!
//! Snapshot entries made elsewhere may be plain files (Windows without symlinks, copied
//! caches): both are read. A blob is renamed into `blobs/` only once complete and of the
//! announced size; an interrupted download is resumed from its `.incomplete` file with an
//! HTTP `Range` request.
//!
//! Downloads use `ureq` (blocking, rustls with ring, no async runtime) directly rather
//! than the `hf-hub` crate: hf-hub 1.x needs tokio and reqwest; 0.4's sync API forces
//! indicatif, names partial files `.part` (not `huggingface_hub`'s `.incomplete`, so
//! neither resumes the other's), has no offline mode, no `.no_exist` marks, no
//! `X-Error-Code` sentences, always sends `Range` (a server answering 200 corrupts a
//! resume) and keeps lock files inside `blobs/`.

mod cache;
mod fetch;
mod http;
mod spec;

use std::path::{Path, PathBuf};
use std::time::Duration;

use lynx_core::Result;

pub use spec::{FileSet, RepoRef, Spec, Wanted};

/// The Hub's address when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where the cache is and how the Hub is reached. [`HubOptions::from_env`] reads the
/// variables `huggingface_hub` reads; tests and embedders fill the fields themselves.
#[derive(Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// The hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// Where [`fetch_url`] keeps files: `$HF_HOME/lynx/urls`.
    pub url_cache_dir: PathBuf,
    /// The Hub's base URL, without a trailing `/`: `$HF_ENDPOINT` or
    /// [`DEFAULT_ENDPOINT`].
    pub endpoint: String,
    /// Sent as `Authorization: Bearer …` to the endpoint's host only: `$HF_TOKEN`, else the
    /// token file `huggingface-cli login` writes (`$HF_TOKEN_PATH`, `$HF_HOME/token`).
    pub token: Option<String>,
    /// Use the cache only and never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// How long to wait to connect, for a response, or for each read of a body
    /// (`$HF_HUB_DOWNLOAD_TIMEOUT`, 10 s by default).
    pub timeout: Duration,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("cache_dir", &self.cache_dir)
            .field("url_cache_dir", &self.url_cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HubOptions {
    /// Options for the `huggingface_hub` home folder `hf_home` (cache in `hf_home/hub`,
    /// URLs in `hf_home/lynx/urls`), the public Hub, no token, online.
    pub fn in_dir(hf_home: impl AsRef<Path>) -> Self {
        let home = hf_home.as_ref();
        HubOptions {
            cache_dir: home.join("hub"),
            url_cache_dir: home.join("lynx").join("urls"),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: None,
            offline: false,
            timeout: Duration::from_secs(10),
        }
    }

    /// Options from the process environment, as `huggingface_hub` reads it.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Options from the variables `var` returns (an empty value counts as unset), read
    /// as [`HubOptions::from_env`] reads the environment. Also reads the token file.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let user_home = var("HOME")
            .or_else(|| var("USERPROFILE"))
            .map(PathBuf::from);
        let expand = |p: String| match (p.strip_prefix("~/"), &user_home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ if p == "~" => user_home.clone().unwrap_or_else(|| PathBuf::from(&p)),
            _ => PathBuf::from(p),
        };
        let hf_home = var("HF_HOME").map(expand).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME").map(expand).unwrap_or_else(|| {
                user_home
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".cache")
            });
            cache.join("huggingface")
        });
        let mut opts = Self::in_dir(&hf_home);
        if let Some(dir) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
            opts.cache_dir = expand(dir);
        }
        if let Some(endpoint) = var("HF_ENDPOINT") {
            opts.endpoint = endpoint.trim().trim_end_matches('/').to_string();
        }
        opts.token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(expand)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let truthy = |name: &str| {
            var(name).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_uppercase().as_str(),
                    "1" | "ON" | "YES" | "TRUE"
                )
            })
        };
        opts.offline = truthy("HF_HUB_OFFLINE") || truthy("TRANSFORMERS_OFFLINE");
        if let Some(secs) = var("HF_HUB_DOWNLOAD_TIMEOUT").and_then(|s| s.trim().parse().ok()) {
            opts.timeout = Duration::from_secs_f64(secs);
        }
        opts
    }
}

/// Told about each file that is downloaded (files already cached are not reported).
/// Every method has an empty default; the CLI draws a bar per file from these calls.
pub trait Progress {
    /// A download of `file` (its path in the repo, or the URL's file name) starts, with
    /// `done` bytes already on disk from an earlier attempt, of `total` if known. Called
    /// again for the same file when a broken transfer is resumed.
    fn start(&mut self, file: &str, done: u64, total: Option<u64>) {
        let _ = (file, done, total);
    }
    /// `done` bytes of the current file are on disk.
    fn update(&mut self, done: u64) {
        let _ = done;
    }
    /// The current file is complete.
    fn finish(&mut self) {}
    /// Something the user should know that is not an error, in a sentence (for
    /// instance: the Hub could not be reached, so the cached copy is used).
    fn note(&mut self, message: &str) {
        let _ = message;
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// The folder holding `files` for `spec`, downloading what is missing.
///
/// `spec` is parsed by [`Spec::parse`]. A local folder is returned as it is (its
/// `subfolder` if that exists inside it, for a folder holding the whole repo), without
/// looking at `files`. A repo's files are fetched into the cache (see [`resolve_repo`]),
/// and the snapshot folder, or its `subfolder`, is returned.
pub fn resolve(
    spec: &str,
    subfolder: Option<&str>,
    files: &FileSet,
    opts: &HubOptions,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    match Spec::parse(spec)? {
        Spec::Local(path) => Ok(match subfolder {
            Some(sub) if !sub.is_empty() && path.join(sub).is_dir() => path.join(sub),
            _ => path,
        }),
        Spec::Hub(repo) => resolve_repo(&repo, subfolder, files, opts, progress),
    }
}

/// The snapshot folder of `repo` (or its `subfolder`) once it holds `files` (names
/// relative to `subfolder`).
///
/// Online, the first request learns the commit the revision points at; files already
/// in that commit's snapshot are not asked for again, and the others are fetched at
/// that commit, so a branch moving meanwhile cannot mix two commits. A file already in
/// `blobs/` (same etag) is only linked. If the Hub cannot be reached at all, a complete
/// cached snapshot of the revision is used (and [`Progress::note`] says so).
///
/// Offline ([`HubOptions::offline`]) only the cache is read; a missing file is an
/// [`Error::MissingFile`](lynx_core::Error::MissingFile) naming the repo, revision and file.
pub fn resolve_repo(
    repo: &RepoRef,
    subfolder: Option<&str>,
    files: &FileSet,
    opts: &HubOptions,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    fetch::resolve_repo(repo, subfolder, files, opts, progress)
}

/// Downloads `url` (http or https) into `{url_cache_dir}/{hash of url}/{file name}` and
/// returns that path. A file already there is returned without asking the server (use
/// URLs that name one release of a file); offline, a missing one is an error. The token
/// is sent only when the URL is on the endpoint's host.
pub fn fetch_url(url: &str, opts: &HubOptions, progress: &mut dyn Progress) -> Result<PathBuf> {
    fetch::fetch_url(url, opts, progress)
}

/// The cache folder of `repo_id` (`models--{org}--{name}`) under
/// [`HubOptions::cache_dir`].
pub fn repo_cache_dir(opts: &HubOptions, repo_id: &str) -> PathBuf {
    cache::RepoCache::new(&opts.cache_dir, repo_id)
        .dir()
        .to_path_buf()
}

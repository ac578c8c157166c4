//! Resolving a [`FileSet`] against the cache (offline) or the Hub (online), and
//! downloading plain URLs.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::cache::{Lock, RepoCache, write_atomic};
use super::http::{Client, HttpFail};
use super::spec::{check_rel_path, index_shards};
use super::{FileSet, HubOptions, Progress, RepoRef, Wanted};
use lynx_core::error::{Error, Result};

/// Finds or fetches one repo file; `None` for an absent optional file.
trait Getter {
    fn get(&mut self, path: &str, required: bool) -> Result<Option<PathBuf>>;
}

/// Gets every file of `files` under `sub`, shard indexes before their shards.
fn walk(files: &FileSet, sub: Option<&str>, getter: &mut dyn Getter) -> Result<()> {
    let full = |p: &str| match sub {
        Some(s) => format!("{s}/{p}"),
        None => p.to_string(),
    };
    for wanted in files.entries() {
        match wanted {
            Wanted::Required(p) | Wanted::Optional(p) => {
                check_rel_path(p).map_err(|why| Error::input(format!("file `{p}`: {why}")))?;
                getter.get(&full(p), matches!(wanted, Wanted::Required(_)))?;
            }
            Wanted::Safetensors(stem) => {
                check_rel_path(stem)
                    .map_err(|why| Error::input(format!("checkpoint `{stem}`: {why}")))?;
                let index = full(&format!("{stem}.safetensors.index.json"));
                match getter.get(&index, false)? {
                    Some(local) => {
                        let dir = index.rsplit_once('/').map(|(d, _)| d);
                        for shard in index_shards(&local)? {
                            let path = match dir {
                                Some(d) => format!("{d}/{shard}"),
                                None => shard,
                            };
                            getter.get(&path, true)?;
                        }
                    }
                    None => {
                        getter.get(&full(&format!("{stem}.safetensors")), true)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The cache only.
struct Cached<'a> {
    cache: &'a RepoCache,
    repo: &'a RepoRef,
    commit: Option<String>,
}

impl Cached<'_> {
    fn new<'a>(cache: &'a RepoCache, repo: &'a RepoRef) -> Cached<'a> {
        let commit = if repo.is_commit() {
            Some(repo.revision.clone())
        } else {
            cache.read_ref(&repo.revision)
        };
        Cached {
            cache,
            repo,
            commit,
        }
    }
}

impl Getter for Cached<'_> {
    fn get(&mut self, path: &str, required: bool) -> Result<Option<PathBuf>> {
        let where_ = match &self.commit {
            Some(commit) => {
                let file = self.cache.snapshot_file(commit, path);
                if file.is_file() {
                    return Ok(Some(file));
                }
                format!(
                    "is not in the cached snapshot {}",
                    self.cache.snapshot_dir(commit).display()
                )
            }
            None => format!(
                "is not in the cache {} (it has no refs/{})",
                self.cache.dir().display(),
                self.repo.revision
            ),
        };
        if !required {
            return Ok(None);
        }
        Err(Error::MissingFile {
            path: PathBuf::from(path),
            hint: format!(
                "this file of Hub repo `{}` at revision `{}` {where_}, and offline mode is on \
                 (HF_HUB_OFFLINE=1), so it is not downloaded; unset HF_HUB_OFFLINE to fetch \
                 it, or give a local folder",
                self.repo.repo_id, self.repo.revision
            ),
        })
    }
}

/// The Hub, with the cache in front.
struct Online<'a> {
    cache: &'a RepoCache,
    repo: &'a RepoRef,
    opts: &'a HubOptions,
    client: Client,
    commit: Option<String>,
    progress: &'a mut dyn Progress,
    /// Set when the network failed, so that the caller may fall back to the cache.
    net_failed: bool,
}

/// Percent-encodes all but unreserved characters (and `/` when `keep_slash`).
fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{endpoint}/{repo}/resolve/{revision}/{path}`, as `hf_hub_url` builds it.
pub(crate) fn resolve_url(endpoint: &str, repo_id: &str, revision: &str, path: &str) -> String {
    format!(
        "{endpoint}/{repo_id}/resolve/{}/{}",
        quote(revision, false),
        quote(path, true)
    )
}

impl Online<'_> {
    fn learn_commit(&mut self, commit: &str) -> Result<()> {
        if self.commit.is_none() {
            if !super::spec::is_commit_hash(commit) {
                return Err(Error::input(format!(
                    "{} answered with a malformed commit `{commit}` for `{}`",
                    self.opts.endpoint, self.repo
                )));
            }
            self.commit = Some(commit.to_string());
            self.cache.write_ref(&self.repo.revision, commit)?;
        }
        Ok(())
    }

    fn absent(&self, path: &str, required: bool, url: &str) -> Result<Option<PathBuf>> {
        if !required {
            return Ok(None);
        }
        Err(Error::MissingFile {
            path: PathBuf::from(path),
            hint: format!(
                "Hub repo `{}` at revision `{}` has no such file ({url} answered 404)",
                self.repo.repo_id, self.repo.revision
            ),
        })
    }

    fn error(&mut self, fail: HttpFail, path: &str) -> Error {
        let (id, rev, endpoint) = (&self.repo.repo_id, &self.repo.revision, &self.opts.endpoint);
        let (url, status, code, message) = match fail {
            HttpFail::Local(e) => return e,
            HttpFail::Net { url, kind, message } => {
                self.net_failed = true;
                let sentence = format!(
                    "{message}; the Hub ({endpoint}) could not be reached for `{path}` of \
                     `{id}`: check the network and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use \
                     the cache only"
                );
                return Error::io(url, io::Error::new(kind, sentence));
            }
            HttpFail::Status {
                url,
                status,
                code,
                message,
                ..
            } => (url, status, code, message),
        };
        let said = message
            .map(|m| format!(" (the Hub said: {m})"))
            .unwrap_or_default();
        let denied =
            |s: String| Error::io(&url, io::Error::new(io::ErrorKind::PermissionDenied, s));
        let token = if self.opts.token.is_some() {
            "the token sent has no access yet"
        } else {
            "no token was sent"
        };
        match (status, code.as_deref()) {
            (_, Some("GatedRepo")) => denied(format!(
                "Hub repo `{id}` is gated: accept its licence at {endpoint}/{id} with your \
                 Hugging Face account, then set HF_TOKEN to an access token of that account \
                 ({token}){said}"
            )),
            (_, Some("RepoNotFound")) => Error::input(format!(
                "Hub repo `{id}` was not found at {endpoint} (HTTP {status}): check the repo \
                 id; a private repo needs HF_TOKEN set to a token that can read it{said}"
            )),
            (_, Some("RevisionNotFound")) => Error::input(format!(
                "Hub repo `{id}` has no revision `{rev}` (HTTP {status}): give a branch, tag \
                 or commit hash after `@`{said}"
            )),
            (401, _) if self.opts.token.is_none() => denied(format!(
                "Hub repo `{id}` needs authentication or does not exist (HTTP 401): check the \
                 repo id; for a private or gated repo set HF_TOKEN to an access token (and \
                 accept the licence at {endpoint}/{id}){said}"
            )),
            (401, _) => denied(format!(
                "the Hub refused the token in HF_TOKEN for `{id}` (HTTP 401): check that it is \
                 valid and may read this repo{said}"
            )),
            (403, _) => denied(format!(
                "access to Hub repo `{id}` is forbidden (HTTP 403; {token}): if it is gated, \
                 accept its licence at {endpoint}/{id}; check that HF_TOKEN may read this \
                 repo{said}"
            )),
            _ => Error::io(
                &url,
                io::Error::other(format!(
                    "HTTP {status} for `{path}` of Hub repo `{id}` at revision `{rev}`{said}"
                )),
            ),
        }
    }
}

impl Getter for Online<'_> {
    fn get(&mut self, path: &str, required: bool) -> Result<Option<PathBuf>> {
        if let Some(commit) = &self.commit {
            let file = self.cache.snapshot_file(commit, path);
            if file.is_file() {
                return Ok(Some(file));
            }
            if self.cache.is_known_absent(commit, path) {
                let url = resolve_url(&self.opts.endpoint, &self.repo.repo_id, commit, path);
                return self.absent(path, required, &url);
            }
        }
        let revision = self.commit.as_ref().unwrap_or(&self.repo.revision);
        let url = resolve_url(&self.opts.endpoint, &self.repo.repo_id, revision, path);
        let meta = match self.client.head(&url) {
            Ok(meta) => meta,
            Err(HttpFail::Status {
                status: 404,
                code,
                commit,
                ..
            }) if code.as_deref().is_none_or(|c| c == "EntryNotFound") => {
                if let Some(commit) = commit.or_else(|| self.commit.clone()) {
                    self.learn_commit(&commit)?;
                    self.cache.mark_absent(&commit, path);
                }
                return self.absent(path, required, &url);
            }
            Err(fail) => return Err(self.error(fail, path)),
        };
        let (Some(commit), Some(etag)) = (meta.commit, meta.etag) else {
            return Err(Error::io(
                &url,
                io::Error::other(format!(
                    "the answer has no x-repo-commit or ETag header: {} does not seem to be a \
                     Hugging Face Hub (check HF_ENDPOINT and any proxy)",
                    self.opts.endpoint
                )),
            ));
        };
        if etag.is_empty() || etag.starts_with('.') || etag.contains(['/', '\\', ':']) {
            return Err(Error::io(
                &url,
                io::Error::other(format!("unusable ETag `{etag}`")),
            ));
        }
        self.learn_commit(&commit)?;
        let commit = self.commit.clone().expect("learnt above");
        let pointer = self.cache.snapshot_file(&commit, path);
        if pointer.is_file() {
            return Ok(Some(pointer));
        }
        let blob = self.cache.blob(&etag);
        if !blob.is_file() {
            let _lock = Lock::acquire(&self.cache.lock_path(&etag))?;
            if !blob.is_file() {
                let part = self.cache.incomplete(&etag);
                let blobs = blob.parent().expect("blobs/ folder");
                fs::create_dir_all(blobs).map_err(|e| Error::io(blobs, e))?;
                // Served by the Hub itself: fetch it at the commit, not at a branch
                // that may have moved since the HEAD.
                let location = if meta.location == url {
                    resolve_url(&self.opts.endpoint, &self.repo.repo_id, &commit, path)
                } else {
                    meta.location
                };
                let got =
                    self.client
                        .download(&location, &part, meta.size, path, &mut *self.progress);
                if let Err(fail) = got {
                    return Err(self.error(fail, path));
                }
                fs::rename(&part, &blob).map_err(|e| Error::io(&blob, e))?;
            }
        }
        self.cache.link(&etag, &commit, path).map(Some)
    }
}

fn subfolder_of(subfolder: Option<&str>) -> Result<Option<&str>> {
    match subfolder
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty())
    {
        Some(s) => {
            check_rel_path(s).map_err(|why| Error::input(format!("subfolder `{s}`: {why}")))?;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

/// The snapshot folder (or its subfolder) of `commit`.
fn folder(
    cache: &RepoCache,
    repo: &RepoRef,
    commit: Option<&str>,
    sub: Option<&str>,
) -> Result<PathBuf> {
    let Some(commit) = commit else {
        return Err(Error::input(format!(
            "none of the files asked for exists in Hub repo `{repo}`"
        )));
    };
    let dir = cache.snapshot_dir(commit);
    Ok(match sub {
        Some(s) => dir.join(s.split('/').collect::<PathBuf>()),
        None => dir,
    })
}

pub(crate) fn resolve_repo(
    repo: &RepoRef,
    subfolder: Option<&str>,
    files: &FileSet,
    opts: &HubOptions,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    let sub = subfolder_of(subfolder)?;
    if files.entries().is_empty() {
        return Err(Error::input("no file of the repo is asked for"));
    }
    let cache = RepoCache::new(&opts.cache_dir, &repo.repo_id);
    let from_cache = || -> Result<PathBuf> {
        let mut cached = Cached::new(&cache, repo);
        walk(files, sub, &mut cached)?;
        folder(&cache, repo, cached.commit.as_deref(), sub)
    };
    if opts.offline {
        return from_cache();
    }
    let mut online = Online {
        cache: &cache,
        repo,
        opts,
        client: Client::new(opts),
        commit: repo.is_commit().then(|| repo.revision.clone()),
        progress,
        net_failed: false,
    };
    match walk(files, sub, &mut online) {
        Ok(()) => folder(&cache, repo, online.commit.as_deref(), sub),
        Err(e) if online.net_failed => match from_cache() {
            Ok(dir) => {
                online.progress.note(&format!(
                    "{e}; using the cached copy of `{repo}` in {}",
                    dir.display()
                ));
                Ok(dir)
            }
            Err(_) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The last path segment of `url`, made safe as a file name.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.split_once("://").map_or(path, |(_, rest)| rest);
    let last = after_host.split_once('/').map_or("", |(_, p)| p);
    let last = last.rsplit('/').next().unwrap_or("");
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        format!("download{name}")
    } else {
        name
    }
}

pub(crate) fn fetch_url(
    url: &str,
    opts: &HubOptions,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(Error::input(format!("`{url}` is not an http(s) URL")));
    }
    let key = format!("{:016x}", fnv1a64(url.as_bytes()));
    let dir = opts.url_cache_dir.join(&key);
    let name = url_file_name(url);
    let file = dir.join(&name);
    if file.is_file() {
        return Ok(file);
    }
    if opts.offline {
        return Err(Error::MissingFile {
            path: file,
            hint: format!(
                "{url} has not been downloaded yet and offline mode is on (HF_HUB_OFFLINE=1), \
                 so it is not downloaded; unset HF_HUB_OFFLINE, or give a local file"
            ),
        });
    }
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let _ = write_atomic(&dir.join(".url"), url.as_bytes());
    let _lock = Lock::acquire(
        &opts
            .url_cache_dir
            .join(".locks")
            .join(format!("{key}.lock")),
    )?;
    if file.is_file() {
        return Ok(file);
    }
    let part = dir.join(format!("{name}.incomplete"));
    let client = Client::new(opts);
    match client.download(url, &part, None, &name, progress) {
        Ok(_) => {}
        Err(HttpFail::Local(e)) => return Err(e),
        Err(HttpFail::Net { url, kind, message }) => {
            return Err(Error::io(
                url,
                io::Error::new(
                    kind,
                    format!("{message}; set HF_HUB_OFFLINE=1 to use only what is cached"),
                ),
            ));
        }
        Err(HttpFail::Status { url, status, .. }) => {
            let kind = match status {
                401 | 403 => io::ErrorKind::PermissionDenied,
                404 | 410 => io::ErrorKind::NotFound,
                _ => io::ErrorKind::Other,
            };
            return Err(Error::io(
                url,
                io::Error::new(kind, format!("the server answered HTTP {status}")),
            ));
        }
    }
    fs::rename(&part, &file).map_err(|e| Error::io(&file, e))?;
    Ok(file)
}

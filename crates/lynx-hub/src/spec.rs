//! What the user named (a folder or a repo) and which files of a repo are needed.

use std::fmt;
use std::path::{Path, PathBuf};

use lynx_core::error::{Error, Result};

/// What a typed model argument names: a local folder or a Hub repo (the Hub client's
/// parse; applications use `lynx_pipeline::Source`, which also holds URLs and
/// subfolders).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// An existing local file or folder.
    Local(PathBuf),
    /// A repo on the Hub.
    Hub(RepoRef),
}

impl Spec {
    /// Tells a local path from a repo id. An existing path always wins; a spec that can
    /// only be a path (`./x`, `../x`, `~/x`, absolute, a backslash or drive letter, more
    /// than one `/` before any `@`) must exist; otherwise `org/name` or
    /// `org/name@revision` is a repo id (revision: branch, tag or commit; default
    /// `main`). Anything else is an [`Error::Input`] saying what was expected.
    pub fn parse(spec: &str) -> Result<Spec> {
        if spec.trim().is_empty() {
            return Err(Error::input(
                "empty model argument: expected a folder or a Hub repo id like `org/name`",
            ));
        }
        let path = expand_home(spec);
        if path.exists() {
            return Ok(Spec::Local(path));
        }
        let id_part = spec.split('@').next().unwrap_or(spec);
        let pathlike = spec.starts_with(['.', '/', '\\', '~'])
            || spec.contains('\\')
            || Path::new(spec).is_absolute()
            || spec.as_bytes().get(1) == Some(&b':')
            || id_part.matches('/').count() > 1
            || id_part.ends_with('/');
        if pathlike {
            return Err(Error::MissingFile {
                path,
                hint: "no such file or folder (a Hub repo id has the form `org/name`)".into(),
            });
        }
        RepoRef::parse(spec).map(Spec::Hub).map_err(|e| {
            Error::input(format!(
                "`{spec}` is neither an existing folder nor a Hub repo id \
                 (`org/name` or `org/name@revision`): {}",
                match e {
                    Error::Input(reason) => reason,
                    other => other.to_string(),
                }
            ))
        })
    }
}

fn expand_home(spec: &str) -> PathBuf {
    match spec.strip_prefix("~/") {
        Some(rest) => match std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")) {
            Some(home) => PathBuf::from(home).join(rest),
            None => PathBuf::from(spec),
        },
        None => PathBuf::from(spec),
    }
}

/// A Hub model repo at a revision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoRef {
    /// `org/name`.
    pub repo_id: String,
    /// A branch, tag or 40-hex-digit commit hash (`main` by default).
    pub revision: String,
}

impl RepoRef {
    /// `repo_id` at `revision`, both checked as the Hub would (`huggingface_hub`'s
    /// `validate_repo_id`: `org/name` of letters, digits, `-`, `_`, `.`, no `--` or
    /// `..`, at most 96 characters; a revision that is a safe relative path).
    pub fn new(repo_id: &str, revision: &str) -> Result<Self> {
        let parts: Vec<&str> = repo_id.split('/').collect();
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !p.starts_with(['-', '.'])
                && !p.ends_with(['-', '.'])
        };
        if parts.len() != 2
            || !parts.iter().all(|p| part_ok(p))
            || repo_id.contains("--")
            || repo_id.contains("..")
            || repo_id.len() > 96
        {
            return Err(Error::input(format!(
                "`{repo_id}` is not a Hub repo id: expected `org/name` of letters, digits, \
                 `-`, `_` and `.`"
            )));
        }
        check_rel_path(revision)
            .map_err(|why| Error::input(format!("`{revision}` is not a usable revision: {why}")))?;
        Ok(RepoRef {
            repo_id: repo_id.to_string(),
            revision: revision.to_string(),
        })
    }

    /// `org/name` or `org/name@revision`.
    pub fn parse(spec: &str) -> Result<Self> {
        match spec.split_once('@') {
            Some((id, rev)) => Self::new(id, rev),
            None => Self::new(spec, "main"),
        }
    }

    /// Whether the revision is a full commit hash (which needs no request to resolve).
    pub fn is_commit(&self) -> bool {
        is_commit_hash(&self.revision)
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.repo_id, self.revision)
    }
}

pub(crate) fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why `p` is not a relative `/`-separated path that stays inside its folder.
pub(crate) fn check_rel_path(p: &str) -> std::result::Result<(), &'static str> {
    if p.is_empty() {
        return Err("it is empty");
    }
    if p.contains('\\') || p.contains('\0') || p.contains(':') {
        return Err("it contains `\\`, `:` or NUL");
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("it has an empty, `.` or `..` component, or starts or ends with `/`");
    }
    Ok(())
}

/// One entry of a [`FileSet`]; paths are `/`-separated, relative to the subfolder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// A file that must exist.
    Required(String),
    /// A file fetched when the repo has it (a 404 is fine).
    Optional(String),
    /// A safetensors checkpoint given by its path without extension: the index
    /// `{stem}.safetensors.index.json` and exactly the shards its `weight_map` lists
    /// (beside it), or `{stem}.safetensors` when there is no index.
    Safetensors(String),
}

/// The files of a repo (or of its subfolder) that are needed, in the order they are
/// fetched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSet {
    entries: Vec<Wanted>,
}

impl FileSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file that must exist.
    pub fn required(mut self, path: &str) -> Self {
        self.entries.push(Wanted::Required(path.to_string()));
        self
    }

    /// Adds a file that may be absent.
    pub fn optional(mut self, path: &str) -> Self {
        self.entries.push(Wanted::Optional(path.to_string()));
        self
    }

    /// Adds a sharded-or-single safetensors checkpoint (see [`Wanted::Safetensors`]).
    pub fn safetensors(mut self, stem: &str) -> Self {
        self.entries.push(Wanted::Safetensors(stem.to_string()));
        self
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[Wanted] {
        &self.entries
    }
}

/// The distinct shard file names a `*.safetensors.index.json` lists, sorted.
pub(crate) fn index_shards(index: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let parsed: Index =
        serde_json::from_str(&text).map_err(|e| Error::format(index, "safetensors index", e))?;
    let mut shards: Vec<String> = parsed.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    for shard in &shards {
        check_rel_path(shard).map_err(|why| {
            Error::format(
                index,
                "safetensors index",
                format!("shard name `{shard}` is not usable: {why}"),
            )
        })?;
    }
    if shards.is_empty() {
        return Err(Error::format(
            index,
            "safetensors index",
            "`weight_map` lists no shard",
        ));
    }
    Ok(shards)
}

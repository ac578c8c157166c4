//! Where weights come from: [`Source`] — a local folder or file, a Hugging Face Hub repo
//! (id, revision, subfolder) resolved into the shared cache as diffusers'
//! `from_pretrained` does, or a URL (facexlib's face models). The pipeline takes one for
//! the base model, the adapters and each face model, and the CLI parses its arguments
//! into the same type; weight files to come (LoRA, a replacement transformer) take one
//! the same way ([`Source::file`]).
//!
//! Hub repos and URLs need the `hub` feature (on by default); without it they are still
//! values, and resolving one says which feature is missing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use lynx_core::{Error, Result};

/// The adapter folder inside `ByteDance/lynx` when none is named: Lynx full.
pub const DEFAULT_ADAPTER_SUBFOLDER: &str = "lynx_full";

/// Progress of downloads ([`lynx_hub::Progress`]); a no-op without the `hub`
/// feature.
#[cfg(feature = "hub")]
pub use lynx_hub::{NoProgress, Progress};

/// Without the `hub` feature nothing is downloaded, so nothing is reported.
#[cfg(not(feature = "hub"))]
pub trait Progress {}

/// A [`Progress`] that ignores everything.
#[cfg(not(feature = "hub"))]
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

#[cfg(not(feature = "hub"))]
impl Progress for NoProgress {}

/// Extensions of weight and config files: a spec ending in one is a path, never a repo id.
const FILE_EXTENSIONS: [&str; 8] = [
    "pth",
    "pt",
    "bin",
    "ckpt",
    "safetensors",
    "gguf",
    "json",
    "onnx",
];

/// Where a model, a model folder or a weight file comes from.
///
/// ```
/// use lynx_pipeline::source::Source;
/// let base = Source::hub("Wan-AI/Wan2.1-T2V-14B-Diffusers");
/// let adapters = Source::hub("ByteDance/lynx").with_subfolder("lynx_lite");
/// let local: Source = "models/lynx_full".into();
/// let arcface = Source::url("https://example.com/recognition_arcface_ir_se50.pth");
/// assert_eq!(adapters.to_string(), "ByteDance/lynx@main/lynx_lite");
/// # let _ = (base, local, arcface);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// A folder or file on this machine.
    Local(PathBuf),
    /// A Hub model repo at a revision; `subfolder` is the folder (or, for a single
    /// file, the file's path) inside it.
    Hub {
        /// `org/name`.
        repo_id: String,
        /// Branch, tag or commit (`main` by default).
        revision: String,
        /// Path inside the repo.
        subfolder: Option<String>,
    },
    /// An `http(s)://` URL of a file, fetched once into the cache.
    Url(String),
}

impl Source {
    /// A local folder or file.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Source::Local(path.into())
    }

    /// The Hub repo `repo_id` (`org/name`) at `main`.
    pub fn hub(repo_id: impl Into<String>) -> Self {
        Source::Hub {
            repo_id: repo_id.into(),
            revision: "main".into(),
            subfolder: None,
        }
    }

    /// A file at `url`.
    pub fn url(url: impl Into<String>) -> Self {
        Source::Url(url.into())
    }

    /// At `revision` (a Hub repo's branch, tag or commit; other sources are unchanged).
    pub fn with_revision(self, revision: impl Into<String>) -> Self {
        match self {
            Source::Hub {
                repo_id, subfolder, ..
            } => Source::Hub {
                repo_id,
                revision: revision.into(),
                subfolder,
            },
            other => other,
        }
    }

    /// The folder (or file) `subfolder` inside: for a Hub repo, its path in the repo; for
    /// a local folder that holds it (a copy of the whole repo), the path joined; a URL is
    /// unchanged.
    pub fn with_subfolder(self, subfolder: impl Into<String>) -> Self {
        let sub = subfolder.into();
        match self {
            Source::Hub {
                repo_id, revision, ..
            } => Source::Hub {
                repo_id,
                revision,
                subfolder: (!sub.is_empty()).then_some(sub),
            },
            Source::Local(path) if !sub.is_empty() && path.join(&sub).exists() => {
                Source::Local(path.join(sub))
            }
            other => other,
        }
    }

    /// Reads what a user typed: an `http(s)://` URL; an existing path, or a missing one
    /// named like a weight file (`.pth`, `.safetensors`, … — its loader then says it is
    /// missing); otherwise (feature `hub`) `org/name` or `org/name@revision`. A spec that
    /// can only be a path (`./x`, absolute, more than one `/`) must exist. Errors say what
    /// was expected.
    pub fn parse(spec: &str) -> Result<Self> {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return Ok(Source::Url(spec.to_string()));
        }
        let ext = Path::new(spec).extension().and_then(|e| e.to_str());
        if ext.is_some_and(|e| FILE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())) {
            return Ok(Source::Local(PathBuf::from(spec)));
        }
        #[cfg(feature = "hub")]
        {
            Ok(match lynx_hub::Spec::parse(spec)? {
                lynx_hub::Spec::Local(path) => Source::Local(path),
                lynx_hub::Spec::Hub(repo) => Source::Hub {
                    repo_id: repo.repo_id,
                    revision: repo.revision,
                    subfolder: None,
                },
            })
        }
        #[cfg(not(feature = "hub"))]
        {
            if spec.trim().is_empty() {
                return Err(Error::input(
                    "empty model argument: expected a folder or a file",
                ));
            }
            Ok(Source::Local(PathBuf::from(spec)))
        }
    }

    /// The local path, if this is one.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Source::Local(p) => Some(p),
            _ => None,
        }
    }

    /// The local Wan2.1 model folder: a folder as it is, or a repo whose needed files
    /// are fetched into the Hub cache (`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`,
    /// `HF_HUB_OFFLINE` as in huggingface_hub): those of a diffusers repo
    /// ([`wan_files`]: it has `model_index.json`), or of the original release
    /// (`Wan-AI/Wan2.1-T2V-14B`, [`wan_original_files`]: a `config.json` and no
    /// `model_index.json`).
    ///
    /// A URL, or a repo path naming a weight file (`.safetensors`, `.gguf`, `.pth`), is a
    /// DiT's single file (see [`crate::folder::ModelFolder::open_with`]): it is fetched
    /// as [`Source::file`] does.
    pub fn model_folder(&self, progress: &mut dyn Progress) -> Result<PathBuf> {
        match self {
            Source::Local(path) => Ok(path.clone()),
            #[cfg(feature = "hub")]
            Source::Url(_) => self.file(progress),
            #[cfg(feature = "hub")]
            Source::Hub {
                subfolder: Some(sub),
                ..
            } if [".safetensors", ".gguf", ".pth"]
                .iter()
                .any(|ext| sub.ends_with(ext)) =>
            {
                self.file(progress)
            }
            #[cfg(feature = "hub")]
            Source::Hub { .. } => {
                let probe = lynx_hub::FileSet::new()
                    .optional("model_index.json")
                    .optional("config.json");
                let dir = self.fetch_folder(None, &probe, progress)?;
                let original =
                    !dir.join("model_index.json").exists() && dir.join("config.json").exists();
                let files = if original {
                    wan_original_files()
                } else {
                    wan_files()
                };
                self.fetch_folder(None, &files, progress)
            }
            #[cfg(not(feature = "hub"))]
            _ => self.unresolvable("a model folder", progress),
        }
    }

    /// The local adapter folder: a `lynx_full/` or `lynx_lite/` folder, or a repo
    /// (`ByteDance/lynx`) whose subfolder (default [`DEFAULT_ADAPTER_SUBFOLDER`]) is
    /// fetched into the Hub cache.
    pub fn adapter_folder(&self, progress: &mut dyn Progress) -> Result<PathBuf> {
        match self {
            Source::Local(path) => Ok(path.clone()),
            #[cfg(feature = "hub")]
            Source::Hub { .. } => {
                self.fetch_folder(Some(DEFAULT_ADAPTER_SUBFOLDER), &adapter_files(), progress)
            }
            _ => self.unresolvable("an adapter folder", progress),
        }
    }

    /// The local file: a path as it is, a URL fetched once into the cache, or the file
    /// at the repo's `subfolder` path.
    pub fn file(&self, progress: &mut dyn Progress) -> Result<PathBuf> {
        match self {
            Source::Local(path) => Ok(path.clone()),
            #[cfg(feature = "hub")]
            Source::Url(url) => {
                lynx_hub::fetch_url(url, &lynx_hub::HubOptions::from_env(), progress)
            }
            #[cfg(feature = "hub")]
            Source::Hub {
                repo_id,
                revision,
                subfolder,
            } => {
                let Some(path) = subfolder else {
                    return Err(Error::input(format!(
                        "{self} names a repo, not a file: give the file's path in it as the \
                         subfolder"
                    )));
                };
                let repo = lynx_hub::RepoRef::new(repo_id, revision)?;
                let files = lynx_hub::FileSet::new().required(path);
                let opts = lynx_hub::HubOptions::from_env();
                Ok(lynx_hub::resolve_repo(&repo, None, &files, &opts, progress)?.join(path))
            }
            #[cfg(not(feature = "hub"))]
            _ => self.unresolvable("a file", progress),
        }
    }

    /// The repo's `files` fetched, in its subfolder or `default_sub`.
    #[cfg(feature = "hub")]
    fn fetch_folder(
        &self,
        default_sub: Option<&str>,
        files: &lynx_hub::FileSet,
        progress: &mut dyn Progress,
    ) -> Result<PathBuf> {
        let Source::Hub {
            repo_id,
            revision,
            subfolder,
        } = self
        else {
            return Err(Error::input(format!("{self} is not a Hub repo")));
        };
        let repo = lynx_hub::RepoRef::new(repo_id, revision)?;
        let sub = subfolder.as_deref().or(default_sub);
        let opts = lynx_hub::HubOptions::from_env();
        lynx_hub::resolve_repo(&repo, sub, files, &opts, progress)
    }

    /// The error for a source this build cannot make local as `what`.
    fn unresolvable(&self, what: &str, progress: &mut dyn Progress) -> Result<PathBuf> {
        let _ = progress;
        Err(Error::input(if cfg!(feature = "hub") {
            format!("{self} cannot be {what}: give a folder or a Hub repo id")
        } else {
            format!(
                "{self} cannot be {what}: this build of lynx-pipeline has no Hub client \
                 (feature `hub`); give a local path"
            )
        }))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Local(p) => write!(f, "{}", p.display()),
            Source::Hub {
                repo_id,
                revision,
                subfolder,
            } => {
                write!(f, "{repo_id}@{revision}")?;
                match subfolder {
                    Some(sub) => write!(f, "/{sub}"),
                    None => Ok(()),
                }
            }
            Source::Url(u) => f.write_str(u),
        }
    }
}

impl FromStr for Source {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Source::parse(s)
    }
}

/// What [`Source::parse`] makes of it; a spec it refuses is taken as a local path (whose
/// loader then says what it expected there).
impl From<&str> for Source {
    fn from(spec: &str) -> Self {
        Source::parse(spec).unwrap_or_else(|_| Source::Local(PathBuf::from(spec)))
    }
}

impl From<String> for Source {
    fn from(spec: String) -> Self {
        Source::from(spec.as_str())
    }
}

impl From<PathBuf> for Source {
    fn from(path: PathBuf) -> Self {
        Source::Local(path)
    }
}

impl From<&PathBuf> for Source {
    fn from(path: &PathBuf) -> Self {
        Source::Local(path.clone())
    }
}

impl From<&Path> for Source {
    fn from(path: &Path) -> Self {
        Source::Local(path.to_path_buf())
    }
}

/// The local LoRA file for `spec` ([`Source::parse_file`] then [`Source::file`]): an
/// existing file as it is, an `http(s)://` URL fetched into the URL cache, or a file in a
/// Hub repo, `org/name/path/in/repo.safetensors` (`org/name@revision/…` for another
/// revision than `main`), fetched into the Hub cache.
pub fn lora_file(spec: &str, progress: &mut dyn Progress) -> Result<PathBuf> {
    match Source::parse_file(spec)? {
        Source::Local(path) if !path.exists() => Err(Error::MissingFile {
            path,
            hint: "no such LoRA file (a Hub file is `org/name/file.safetensors`, or give a URL)"
                .into(),
        }),
        source => source.file(progress),
    }
}

impl Source {
    /// Reads a typed weight-file argument (`--lora`, `--transformer`, `--text-encoder`,
    /// `--vae`): an existing path; an `http(s)://` URL; with the `hub` feature,
    /// `org/name/path/in/repo` or `org/name@revision/path/in/repo`, a file in a Hub repo
    /// (a spec starting with `.`, `/` or `~` is always a path); anything else a local
    /// path, whose loader then says it is missing.
    pub fn parse_file(spec: &str) -> Result<Self> {
        let path = PathBuf::from(spec);
        if path.exists() {
            return Ok(Source::Local(path));
        }
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return Ok(Source::Url(spec.to_string()));
        }
        #[cfg(feature = "hub")]
        {
            let mut parts = spec.splitn(3, '/');
            if let (Some(org), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next())
                && !spec.starts_with(['.', '/', '~'])
                && !file.is_empty()
            {
                let repo = lynx_hub::RepoRef::parse(&format!("{org}/{name}"))?;
                return Ok(Source::Hub {
                    repo_id: repo.repo_id,
                    revision: repo.revision,
                    subfolder: Some(file.to_string()),
                });
            }
        }
        Ok(Source::Local(path))
    }
}

/// What the pipeline reads from a Wan2.1 diffusers repo (`Wan-AI/Wan2.1-T2V-14B-Diffusers`):
/// `model_index.json`, the scheduler config, the UMT5 text encoder (config, index and
/// its shards, or `model.safetensors`), the tokenizer (`tokenizer.json`; its config,
/// special tokens map and `spiece.model` when present), the transformer (config, index
/// and shards) and the VAE (config and `diffusion_pytorch_model.safetensors`).
#[cfg(feature = "hub")]
pub fn wan_files() -> lynx_hub::FileSet {
    lynx_hub::FileSet::new()
        .required("model_index.json")
        .required("scheduler/scheduler_config.json")
        .required("text_encoder/config.json")
        .safetensors("text_encoder/model")
        .required("tokenizer/tokenizer.json")
        .optional("tokenizer/tokenizer_config.json")
        .optional("tokenizer/special_tokens_map.json")
        .optional("tokenizer/spiece.model")
        .required("transformer/config.json")
        .safetensors("transformer/diffusion_pytorch_model")
        .required("vae/config.json")
        .required("vae/diffusion_pytorch_model.safetensors")
}

/// What the pipeline reads from the original Wan2.1 release (`Wan-AI/Wan2.1-T2V-14B`,
/// see [`crate::original`]): Wan's `config.json`, the native DiT (index and shards, or
/// one file), the T5 and the VAE as `torch.save` files, the `google/umt5-xxl/` tokenizer,
/// and a `text_encoder/config.json` or `vae/config.json` beside them when present.
#[cfg(feature = "hub")]
pub fn wan_original_files() -> lynx_hub::FileSet {
    use crate::original::{T5_FILE, TOKENIZER_DIR, VAE_FILE};
    let tokenizer = |name: &str| format!("{TOKENIZER_DIR}/{name}");
    lynx_hub::FileSet::new()
        .required("config.json")
        .safetensors("diffusion_pytorch_model")
        .required(T5_FILE)
        .required(VAE_FILE)
        .required(&tokenizer("tokenizer.json"))
        .optional(&tokenizer("tokenizer_config.json"))
        .optional(&tokenizer("special_tokens_map.json"))
        .optional(&tokenizer("spiece.model"))
        .optional("text_encoder/config.json")
        .optional("vae/config.json")
}

/// What the pipeline reads from a Lynx adapter folder (`lynx_full`, `lynx_lite` of
/// `ByteDance/lynx`): `resampler.safetensors`, `ip_layers.safetensors`, and
/// `ref_layers.safetensors` when present (`lynx_lite` has none).
#[cfg(feature = "hub")]
pub fn adapter_files() -> lynx_hub::FileSet {
    lynx_hub::FileSet::new()
        .required("resampler.safetensors")
        .required("ip_layers.safetensors")
        .optional("ref_layers.safetensors")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_print_as_typed() {
        let url = "https://example.com/v0.1.0/detection_Resnet50_Final.pth";
        assert_eq!(Source::parse(url).unwrap(), Source::url(url));
        let here = env!("CARGO_MANIFEST_DIR");
        assert_eq!(Source::parse(here).unwrap(), Source::local(here));
        // A missing weight file is a path, not a repo id.
        assert_eq!(
            Source::from("models/detection_Resnet50_Final.pth"),
            Source::local("models/detection_Resnet50_Final.pth")
        );
        // A missing path is still a path: its loader names it.
        assert_eq!(
            Source::from("/nonexistent/Wan"),
            Source::local("/nonexistent/Wan")
        );
        let lite = Source::hub("ByteDance/lynx")
            .with_revision("v1")
            .with_subfolder("lynx_lite");
        assert_eq!(lite.to_string(), "ByteDance/lynx@v1/lynx_lite");
        assert_eq!(lite.as_local(), None);
        // A local folder takes a subfolder only when it holds it.
        let src = Source::local(here);
        assert_eq!(
            src.clone().with_subfolder("src"),
            Source::local(format!("{here}/src"))
        );
        assert_eq!(src.clone().with_subfolder("no-such-dir"), src);
        #[cfg(feature = "hub")]
        {
            assert_eq!(
                Source::parse("Wan-AI/Wan2.1-T2V-14B-Diffusers@abc").unwrap(),
                Source::hub("Wan-AI/Wan2.1-T2V-14B-Diffusers").with_revision("abc")
            );
            let e = Source::hub("ByteDance/lynx")
                .file(&mut NoProgress)
                .unwrap_err();
            assert!(e.to_string().contains("not a file"), "{e}");
        }
    }
}

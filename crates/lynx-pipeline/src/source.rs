//! Where a model comes from: a local folder, or (feature `hub`) a Hugging Face Hub repo
//! id resolved into the shared cache, as diffusers' `from_pretrained` takes either.
//!
//! [`LynxPipeline::from_pretrained`](crate::LynxPipeline::from_pretrained) runs its two
//! arguments through [`model_folder`] and [`adapter_folder`]; the CLI calls them itself
//! to draw download progress.

use std::path::{Path, PathBuf};

use lynx_core::Result;

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

/// Whether `spec` names a Hub repo rather than a path (an existing path always wins;
/// a missing one is left for the loaders, whose errors say what folder they expected).
#[cfg(feature = "hub")]
fn is_repo_id(spec: &str) -> bool {
    matches!(lynx_hub::Source::parse(spec), Ok(lynx_hub::Source::Hub(_)))
}

/// The local Wan2.1 diffusers folder for `spec`: an existing folder as it is, or a repo
/// id (`Wan-AI/Wan2.1-T2V-14B-Diffusers`, `org/name@revision`) whose needed files
/// ([`wan_files`]) are fetched into the Hub cache (`HF_HOME`,
/// `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE` as in huggingface_hub).
pub fn model_folder(spec: &Path, progress: &mut dyn Progress) -> Result<PathBuf> {
    #[cfg(feature = "hub")]
    {
        use lynx_hub as hub;
        if let Some(text) = spec.to_str()
            && is_repo_id(text)
        {
            return hub::resolve(
                text,
                None,
                &wan_files(),
                &hub::HubOptions::from_env(),
                progress,
            );
        }
    }
    let _ = progress;
    Ok(spec.to_path_buf())
}

/// The local adapter folder for `spec`: an existing `lynx_full/` or `lynx_lite/` folder
/// (or a folder holding both, where `subfolder` picks one), or a repo id
/// (`ByteDance/lynx`) whose `subfolder` (default [`DEFAULT_ADAPTER_SUBFOLDER`]) is
/// fetched into the Hub cache.
pub fn adapter_folder(
    spec: &Path,
    subfolder: Option<&str>,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    #[cfg(feature = "hub")]
    {
        use lynx_hub as hub;
        if let Some(text) = spec.to_str()
            && is_repo_id(text)
        {
            // A repo holds both variants: name one, full by default.
            let sub = subfolder.unwrap_or(DEFAULT_ADAPTER_SUBFOLDER);
            return hub::resolve(
                text,
                Some(sub),
                &adapter_files(),
                &hub::HubOptions::from_env(),
                progress,
            );
        }
    }
    let _ = progress;
    Ok(match subfolder {
        Some(sub) if spec.join(sub).is_dir() => spec.join(sub),
        _ => spec.to_path_buf(),
    })
}

/// The local LoRA file for `spec`: an existing file as it is, an `http(s)://` URL
/// fetched into the URL cache, or a file in a Hub repo, `org/name/path/in/repo.safetensors`
/// (`org/name@revision/…` for another revision than `main`), fetched into the Hub cache.
pub fn lora_file(spec: &str, progress: &mut dyn Progress) -> Result<PathBuf> {
    let path = PathBuf::from(spec);
    if path.exists() {
        return Ok(path);
    }
    #[cfg(feature = "hub")]
    {
        use lynx_hub as hub;
        let opts = hub::HubOptions::from_env();
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return hub::fetch_url(spec, &opts, progress);
        }
        let mut parts = spec.splitn(3, '/');
        if let (Some(org), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next())
            && !spec.starts_with(['.', '/', '~'])
            && !file.is_empty()
        {
            let repo = hub::RepoRef::parse(&format!("{org}/{name}"))?;
            let dir = hub::resolve_repo(
                &repo,
                None,
                &hub::FileSet::new().required(file),
                &opts,
                progress,
            )?;
            return Ok(dir.join(file));
        }
    }
    let _ = progress;
    Err(lynx_core::Error::MissingFile {
        path,
        hint: "no such LoRA file (a Hub file is `org/name/file.safetensors`, or give a URL)".into(),
    })
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

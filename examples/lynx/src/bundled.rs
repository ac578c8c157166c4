//! The tiny random-weight model of the tests, inside the binary: `lynx generate` with no
//! model flags runs it even after `cargo install`, with the source tree gone.
//!
//! The files (~2.4 MB: `tests/fixtures/` of the repository) are compiled in and written
//! on first use to `$XDG_CACHE_HOME/lynx-rs/tiny-<hash>/` (else `~/.cache/...`, else the
//! system's temporary folder), named by a hash of their bytes so that a newer binary
//! never reads an older copy. The folder appears whole or not at all: it is written
//! under a temporary name and renamed.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

macro_rules! embed {
    ($($path:literal,)*) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/", $path)) as &[u8]),)*]
    };
}

/// `(path under tests/fixtures, bytes)` of every bundled file.
static FILES: &[(&str, &[u8])] = embed!(
    "Wan2.1-T2V-tiny-Diffusers/model_index.json",
    "Wan2.1-T2V-tiny-Diffusers/scheduler/scheduler_config.json",
    "Wan2.1-T2V-tiny-Diffusers/text_encoder/config.json",
    "Wan2.1-T2V-tiny-Diffusers/text_encoder/model.safetensors",
    "Wan2.1-T2V-tiny-Diffusers/tokenizer/special_tokens_map.json",
    "Wan2.1-T2V-tiny-Diffusers/tokenizer/spiece.model",
    "Wan2.1-T2V-tiny-Diffusers/tokenizer/tokenizer.json",
    "Wan2.1-T2V-tiny-Diffusers/tokenizer/tokenizer_config.json",
    "Wan2.1-T2V-tiny-Diffusers/transformer/config.json",
    "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model-00001-of-00009.safetensors",
    "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model-00002-of-00009.safetensors",
    "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model-00003-of-00009.safetensors",
    "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model-00004-of-00009.safetensors",
    "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model-00005-of-00009.safetensors",
    "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model-00006-of-00009.safetensors",
    "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model-00007-of-00009.safetensors",
    "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model-00008-of-00009.safetensors",
    "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model-00009-of-00009.safetensors",
    "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model.safetensors.index.json",
    "Wan2.1-T2V-tiny-Diffusers/vae/config.json",
    "Wan2.1-T2V-tiny-Diffusers/vae/diffusion_pytorch_model.safetensors",
    "cli/face_embedding.safetensors",
    "cli/face_embedding_512.safetensors",
    "components/pipeline_aligned_face.png",
    "lynx_full/ip_layers.safetensors",
    "lynx_full/ref_layers.safetensors",
    "lynx_full/resampler.safetensors",
    "lynx_lite/ip_layers.safetensors",
    "lynx_lite/resampler.safetensors",
);

/// A bundled file (or folder), written out to the cache on first use.
pub(crate) fn bundled(relative: &str) -> Result<PathBuf> {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = match DIR.get() {
        Some(dir) => dir,
        None => {
            let dir = extracted()?;
            DIR.get_or_init(|| dir)
        }
    };
    Ok(dir.join(relative))
}

fn cache_root() -> PathBuf {
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache"));
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or(home)
        .unwrap_or_else(std::env::temp_dir)
        .join("lynx-rs")
}

fn extracted() -> Result<PathBuf> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    FILES.hash(&mut h);
    let dir = cache_root().join(format!("tiny-{:016x}", h.finish()));
    if dir.is_dir() {
        return Ok(dir);
    }
    let parent = dir.parent().expect("the cache folder has a parent");
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating {} for the bundled tiny model", parent.display()))?;
    let staging = parent.join(format!(".tiny-{}-{}", std::process::id(), h.finish()));
    let write = || -> std::io::Result<()> {
        for (path, bytes) in FILES {
            let target = staging.join(path);
            std::fs::create_dir_all(target.parent().expect("a file path has a parent"))?;
            std::fs::write(target, bytes)?;
        }
        Ok(())
    };
    let written = write().and_then(|()| std::fs::rename(&staging, &dir));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        // Another process may have written the same folder meanwhile.
        if !dir.is_dir() {
            return Err(e)
                .with_context(|| format!("writing the bundled tiny model to {}", dir.display()));
        }
    }
    Ok(dir)
}

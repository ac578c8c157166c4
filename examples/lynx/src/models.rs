//! What the model flags name, made local: folders as they are, Hub repo ids and URLs
//! fetched into the Hugging Face cache with a progress bar per file.

use std::path::{Path, PathBuf};

use anyhow::Result;
use indicatif::ProgressBar;
use lynx_pipeline::lynx_hub::{self as hub, HubOptions};
use lynx_pipeline::source::{self, Progress};

/// Draws a byte bar per downloaded file on stderr (nothing when quiet).
pub struct Bars {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl Bars {
    /// Bars on stderr, or none with `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self { quiet, bar: None }
    }
}

impl Progress for Bars {
    fn start(&mut self, file: &str, done: u64, total: Option<u64>) {
        if self.quiet {
            return;
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        bar.set_style(crate::progress::style(
            "{msg:40!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ));
        bar.set_message(file.to_string());
        bar.set_position(done);
        self.bar = Some(bar);
    }

    fn update(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }

    fn note(&mut self, message: &str) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }
}

/// The Wan2.1 diffusers folder `spec` names (a folder, or a repo id fetched now).
pub fn model(spec: &str, quiet: bool) -> Result<PathBuf> {
    Ok(source::model_folder(
        Path::new(spec),
        &mut Bars::new(quiet),
    )?)
}

/// The adapter folder `spec` names, `subfolder` picking `lynx_full`/`lynx_lite` inside a
/// repo (or a folder holding both).
pub fn adapters(spec: &str, subfolder: Option<&str>, quiet: bool) -> Result<PathBuf> {
    Ok(source::adapter_folder(
        Path::new(spec),
        subfolder,
        &mut Bars::new(quiet),
    )?)
}

/// A face-model file: a path as it is, or an `http(s)://` URL fetched into the cache.
pub fn file(spec: &Path, quiet: bool) -> Result<PathBuf> {
    match spec.to_str() {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Ok(
            hub::fetch_url(url, &HubOptions::from_env(), &mut Bars::new(quiet))?,
        ),
        _ => Ok(spec.to_path_buf()),
    }
}

/// A weight file for `--transformer`, `--text-encoder` or `--vae`: an existing path as it
/// is, an `http(s)://` URL fetched into the cache, or a file in a Hub repo written
/// `org/name/path/in/repo` (`org/name@revision/path` for another revision than `main`),
/// fetched into the Hugging Face cache.
pub fn weight_file(spec: &str, quiet: bool) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() || spec.starts_with(['.', '/', '~']) {
        return Ok(path.to_path_buf());
    }
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return file(path, quiet);
    }
    let mut parts = spec.splitn(3, '/');
    let (Some(org), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!(
            "`{spec}` is neither an existing file, a URL nor a Hub file `org/name/path/in/repo`"
        );
    };
    let repo = hub::RepoRef::parse(&format!("{org}/{name}"))?;
    let files = hub::FileSet::new().required(file);
    let dir = hub::resolve_repo(
        &repo,
        None,
        &files,
        &HubOptions::from_env(),
        &mut Bars::new(quiet),
    )?;
    Ok(dir.join(file))
}

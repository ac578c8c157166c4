//! What the model flags name, made local: folders as they are, Hub repo ids and URLs
//! fetched into the Hugging Face cache with a progress bar per file.

use std::path::{Path, PathBuf};

use anyhow::Result;
use indicatif::ProgressBar;
use lynx_pipeline::PipelineOptions;
use lynx_pipeline::source::{Progress, Source};

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

/// The Wan2.1 diffusers folder `source` names (a folder, or a repo fetched now).
pub fn model(source: &Source, quiet: bool) -> Result<PathBuf> {
    Ok(source.model_folder(&mut Bars::new(quiet))?)
}

/// The adapter folder `source` names (its subfolder picking `lynx_full`/`lynx_lite`
/// inside a repo, or a folder holding both).
pub fn adapters(source: &Source, quiet: bool) -> Result<PathBuf> {
    Ok(source.adapter_folder(&mut Bars::new(quiet))?)
}

/// A face-model file argument: an `http(s)://` URL, else a path (never a repo id: a
/// missing file is reported as one).
pub fn file_source(spec: &Path) -> Source {
    match spec.to_str() {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Source::url(url),
        _ => Source::local(spec),
    }
}

/// A LoRA file: a path, a Hub file `org/name/file.safetensors` or a URL, fetched into
/// the cache.
pub fn lora(spec: &str, quiet: bool) -> Result<PathBuf> {
    Ok(lynx_pipeline::source::lora_file(
        spec,
        &mut Bars::new(quiet),
    )?)
}

/// `options` with its face models and weight files (`--transformer`, `--text-encoder`,
/// `--vae`) fetched into the cache (with bars).
pub fn resolved(options: &PipelineOptions, quiet: bool) -> Result<PipelineOptions> {
    Ok(options.resolved(&mut Bars::new(quiet))?)
}

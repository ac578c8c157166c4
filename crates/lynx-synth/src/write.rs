//! Writing a [`Plan`]: every file streamed to disk in chunks of a few MB, with a
//! progress callback, and the report of what was written and how fast.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fill::{CHUNK_ELEMS, Xoshiro256pp, fill_chunk};
use crate::{Component, Content, Plan, Preset, SynthOptions, WeightDtype, plan};
use lynx_core::{Error, Result};
use lynx_store::safetensors_io::SafetensorsWriter;

/// Where a write stands, passed to the progress callback after every chunk.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The file being written (under the output folder).
    pub file: &'a Path,
    /// Bytes of it written so far.
    pub file_done: u64,
    /// Its size.
    pub file_total: u64,
    /// Bytes of the whole plan written so far.
    pub done: u64,
    /// Size of the whole plan.
    pub total: u64,
}

/// One written file.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Path under the output folder.
    pub path: PathBuf,
    /// What it belongs to.
    pub component: Component,
    /// Size in bytes.
    pub bytes: u64,
}

/// What [`write_plan`] wrote and how fast.
#[derive(Debug, Clone)]
pub struct SynthReport {
    /// The output folder.
    pub out_dir: PathBuf,
    /// The files, in writing order.
    pub files: Vec<WrittenFile>,
    /// Sum of their sizes.
    pub total_bytes: u64,
    /// Wall time of the whole write.
    pub elapsed: Duration,
}

impl SynthReport {
    /// Write speed in MB/s (10^6 bytes per second).
    pub fn mb_per_s(&self) -> f64 {
        self.total_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Bytes per component.
    pub fn component_bytes(&self) -> BTreeMap<Component, u64> {
        let mut m = BTreeMap::new();
        for f in &self.files {
            *m.entry(f.component).or_default() += f.bytes;
        }
        m
    }
}

/// Writes every file of `plan` under `out_dir` (existing files are replaced; each
/// `.safetensors` file appears only once complete).
pub fn write_plan(
    plan: &Plan,
    out_dir: &Path,
    mut progress: impl FnMut(&Progress),
) -> Result<SynthReport> {
    let start = Instant::now();
    let total = plan.total_bytes();
    let mut done = 0u64;
    let mut written = Vec::with_capacity(plan.files.len());
    let mut buf = Vec::with_capacity(4 * CHUNK_ELEMS);
    for f in &plan.files {
        let path = out_dir.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        match &f.content {
            Content::Text(text) => std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?,
            Content::Copy(src) => {
                std::fs::copy(src, &path).map_err(|e| Error::io(src, e))?;
            }
            Content::Dit(dit) => {
                dit.write(plan.seed, &path, |file_done| {
                    progress(&Progress {
                        file: &path,
                        file_done,
                        file_total: f.bytes,
                        done: done + file_done,
                        total,
                    })
                })?;
            }
            Content::Tensors { layout, inits } => {
                let mut w = SafetensorsWriter::create(&path, layout.clone())?;
                let mut file_done = 8 + layout.header().len() as u64;
                for (t, &init) in layout.tensors().iter().zip(inits) {
                    w.begin_tensor(&t.name)?;
                    let seed_name = format!("{}/{}", f.component.name(), t.name);
                    let mut rng = Xoshiro256pp::for_tensor(plan.seed, &seed_name);
                    let mut left = t.numel();
                    while left > 0 {
                        let n = left.min(CHUNK_ELEMS as u64) as usize;
                        fill_chunk(&mut buf, n, init, t.dtype, &mut rng);
                        w.write_bytes(&buf)?;
                        left -= n as u64;
                        file_done += buf.len() as u64;
                        progress(&Progress {
                            file: &path,
                            file_done,
                            file_total: f.bytes,
                            done: done + file_done,
                            total,
                        });
                    }
                }
                w.finish()?;
            }
        }
        done += f.bytes;
        progress(&Progress {
            file: &path,
            file_done: f.bytes,
            file_total: f.bytes,
            done,
            total,
        });
        written.push(WrittenFile {
            path,
            component: f.component,
            bytes: f.bytes,
        });
    }
    Ok(SynthReport {
        out_dir: out_dir.to_path_buf(),
        files: written,
        total_bytes: done,
        elapsed: start.elapsed(),
    })
}

/// Plans and writes `preset` in `dtype` under `out_dir`; `progress` is called after
/// every chunk of a few MB.
pub fn write_synthetic(
    preset: Preset,
    dtype: WeightDtype,
    out_dir: &Path,
    opts: &SynthOptions,
    progress: impl FnMut(&Progress),
) -> Result<SynthReport> {
    let plan = plan(&preset.model_set(), dtype, opts)?;
    write_plan(&plan, out_dir, progress)
}

//! A [`Plan`]'s files with their real headers and sizes but no values: each weight file
//! is its header, then a hole up to its size (sparse on the usual filesystems, so the 14B
//! set takes a few MB of disk and is written in a second; its data reads as zeros). For
//! checks that read only headers — layout detection, configs read off shapes, memory
//! plans — at the real models' sizes.
//!
//! Blobs that are not weights can be put in a file with [`write_tensors`] (e.g. a
//! `spiece_model`), the rest of it left as a hole.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use lynx_core::{Error, Result};
use lynx_store::safetensors_io::{Layout, TensorSpec};

use crate::{Content, Plan};

/// Writes every file of `plan` under `out_dir`: texts and copies whole, weight files as
/// their header and a hole. Returns the bytes actually written.
pub fn write_plan(plan: &Plan, out_dir: &Path) -> Result<u64> {
    let mut written = 0u64;
    for f in &plan.files {
        let path = out_dir.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let head = match &f.content {
            Content::Text(text) => text.as_bytes().to_vec(),
            Content::Copy(src) => std::fs::read(src).map_err(|e| Error::io(src, e))?,
            Content::Tensors { layout, .. } => prefixed(layout),
            Content::Dit(dit) => dit.header()?,
        };
        written += head.len() as u64;
        write_holed(&path, &head, &[], f.bytes)?;
    }
    Ok(written)
}

/// Writes a safetensors file of `tensors` to `path`: the header, the bytes of the
/// tensors named in `values`, holes for the rest.
pub fn write_tensors(
    path: &Path,
    tensors: Vec<TensorSpec>,
    values: &[(&str, &[u8])],
) -> Result<()> {
    let layout = Layout::new(tensors, None)?;
    let head = prefixed(&layout);
    let mut at = head.len() as u64;
    let mut placed = Vec::new();
    for t in layout.tensors() {
        if let Some((_, bytes)) = values.iter().find(|(name, _)| *name == t.name) {
            if bytes.len() as u64 != t.byte_len() {
                return Err(Error::input(format!(
                    "`{}` holds {} bytes, {} given",
                    t.name,
                    t.byte_len(),
                    bytes.len()
                )));
            }
            placed.push((at, *bytes));
        }
        at += t.byte_len();
    }
    write_holed(path, &head, &placed, layout.file_len())
}

/// The length prefix and header of a safetensors `layout`.
fn prefixed(layout: &Layout) -> Vec<u8> {
    let mut h = (layout.header().len() as u64).to_le_bytes().to_vec();
    h.extend(layout.header());
    h
}

/// `head` at the start of a file of `len` bytes, `placed` bytes at their offsets.
fn write_holed(path: &Path, head: &[u8], placed: &[(u64, &[u8])], len: u64) -> Result<()> {
    let io = |e| Error::io(path, e);
    let mut file = std::fs::File::create(path).map_err(io)?;
    file.write_all(head).map_err(io)?;
    for (at, bytes) in placed {
        file.seek(SeekFrom::Start(*at)).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
    }
    file.set_len(len.max(head.len() as u64)).map_err(io)
}

//! What a [`crate::Checkpoint`] knows of each tensor, and the memory-mapped files behind
//! them.

use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use lynx_core::quant::Encoding;
use lynx_core::{Error, Result};
use memmap2::Mmap;

/// One tensor of a checkpoint.
pub(crate) struct Entry {
    pub file: usize,
    /// `None` for dtypes burn has no element type for (fp8, GGUF blocks, complex).
    pub dtype: Option<DType>,
    /// The dtype as the file names it, for error messages.
    pub file_dtype: String,
    /// The PyTorch shape.
    pub shape: Vec<usize>,
    /// Byte range of the data inside the memory-mapped file.
    pub range: (usize, usize),
    /// Set when lynx-rs decodes the tensor itself: fp8, GGUF blocks, or any tensor with
    /// a per-tensor scale.
    pub encoding: Option<Encoding>,
    /// ComfyUI's `scale_weight` / `weight_scale`: the value is `stored × scale` (f32).
    pub scale: Option<f32>,
}

/// A memory-mapped checkpoint file.
pub(crate) struct Backing {
    path: PathBuf,
    pub mmap: Mmap,
}

impl Backing {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a checkpoint modified while loaded is the
        // user's to avoid, as with every mmap-based loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

//! A [recording](Checkpoint::recording) checkpoint: no file behind it; every tensor a
//! model's loader asks for is written down ([`TensorRecord`]: key, shape, dtype) and
//! answered with a placeholder of that shape, so running a model's own `load` on it lists
//! the state dict that model reads — at any size, in no memory.
//!
//! It is a sibling of [`Checkpoint::synthetic`] (random tensors of the requested shapes)
//! and of the [validating](crate::Loader::validating) loader that
//! [`Checkpoint::measure`] uses (placeholders checked against a real file). What a file
//! alone decides — a count or width no config holds, an optional tensor — is
//! *declared* up front: declared tensors answer [`crate::Loader::has`] and
//! [`crate::Loader::shape`], are checked against the read like a file's, and one that
//! the loader never reads is reported as unused.
//!
//! The records are what a synthetic checkpoint writer needs (`lynx-synth`), and what an
//! encoder of the same model in another form would start from: a rank-2 `*.weight`
//! read in the model dtype is a linear layer (the ones a low-rank file adapts, the ones
//! an 8-bit or GGUF file quantises), while tensors read in f32 whatever the model dtype
//! (norm gains, modulation tables) stay in full precision.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{DType, Device};
use lynx_core::Result;

use crate::{Checkpoint, Loader};

/// One tensor a loader asked a recording checkpoint for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRecord {
    /// Full key (`blocks.0.attn1.to_q.weight`).
    pub key: String,
    /// Shape as asked for (or as declared).
    pub shape: Vec<usize>,
    /// The dtype the loader reads it in: the model dtype, or f32 for tensors a model
    /// keeps in f32 whatever its dtype.
    pub dtype: DType,
}

impl Checkpoint {
    /// A checkpoint with no file behind it that records every tensor a loader asks for
    /// (see [`crate::record`]); run a loader on it with [`Checkpoint::record`].
    /// `declared` gives the tensors whose shapes only a file would know, by key.
    pub fn recording(declared: BTreeMap<String, Vec<usize>>) -> Self {
        let mut ckpt = Checkpoint::synthetic(0.0);
        ckpt.path = PathBuf::from("<recording checkpoint>");
        ckpt.synthetic = None;
        ckpt.recording = Some(declared);
        ckpt
    }

    /// Whether this is a [recording](Checkpoint::recording) checkpoint.
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Runs `load` on this recording checkpoint with a loader of model dtype `dtype`,
    /// reading nothing, and returns every tensor it asked for, in the order first asked
    /// (each key once). The checks of [`Checkpoint::build`] apply: a tensor asked for
    /// twice with different shapes or dtypes, a read of a declared tensor in another
    /// shape, or a declared tensor never read is an error.
    pub fn record<M>(
        &self,
        device: &Device,
        dtype: DType,
        load: impl FnOnce(&Loader<'_>) -> Result<M>,
    ) -> Result<Vec<TensorRecord>> {
        if !self.is_recording() {
            return Err(lynx_core::Error::input(format!(
                "{} is not a recording checkpoint",
                self.path.display()
            )));
        }
        lynx_core::device::check_dtype(device, dtype)?;
        let loader = Loader::new(self, device, dtype).validating();
        drop(load(&loader)?);
        let records = loader.take_records();
        loader.finish()?;
        Ok(records)
    }
}

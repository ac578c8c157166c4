//! PyTorch `.pth` archives (what facexlib ships), read through burn-store's
//! `pytorch-reader`.

use std::path::Path;

use crate::error::{Error, Result};

/// Every tensor of the state dict in `path`, by dotted name.
pub(crate) fn open(path: &Path) -> Result<Vec<(String, pytorch_reader::Tensor)>> {
    let reader =
        pytorch_reader::PytorchReader::new(path).map_err(|e| Error::format(path, "PyTorch", e))?;
    Ok(reader.into_tensors().into_iter().collect())
}

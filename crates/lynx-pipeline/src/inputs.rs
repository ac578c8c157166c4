//! The tensors a user hands to a generation as files: a face embedding (as
//! `lynx embed-face` writes it), and recorded initial latents and reference noise (to
//! replay a run, e.g. the reference's). Each is one named float tensor in a
//! `.safetensors` file (or any format [`Checkpoint::open`] reads).
//!
//! Shapes and values are checked here, with errors naming the file: a missing key, the
//! wrong rank, a dtype that is not a float, NaN or infinite values. Whether the shape
//! fits the request is checked when the generation starts (see [`crate::NoiseSource`]).

use std::path::Path;

use burn::tensor::{DType, Device, Tensor, TensorData};
use lynx_core::{Error, Result};
use lynx_store::Checkpoint;

/// Key of the face embedding: `[D]` or `[1, D]`.
pub const EMBEDDING_KEY: &str = "embedding";
/// Key of the initial latents: `[1, C, F', H/8, W/8]`.
pub const LATENTS_KEY: &str = "latents";
/// Key of the reference image's VAE sampling noise: `[1, C, 1, h, w]`.
pub const REF_NOISE_KEY: &str = "eps";

/// Reads the face embedding (key [`EMBEDDING_KEY`], `[D]` or `[1, D]`) at `path`.
pub fn read_embedding(path: impl AsRef<Path>) -> Result<Vec<f32>> {
    let path = path.as_ref();
    let (values, shape) = read_finite(path, EMBEDDING_KEY)?;
    match shape.as_slice() {
        [d] | [1, d] if *d > 0 => Ok(values),
        _ => Err(Error::Shape {
            path: path.to_path_buf(),
            key: EMBEDDING_KEY.into(),
            expected: vec![0],
            found: shape,
        }),
    }
}

/// Reads recorded initial latents (key [`LATENTS_KEY`], rank 5) at `path` onto `device`.
///
/// # Shapes
/// - output: `[1, C, F', H/8, W/8]` as stored, f32.
pub fn read_latents(path: impl AsRef<Path>, device: &Device) -> Result<Tensor<5>> {
    read_rank5(path.as_ref(), LATENTS_KEY, device)
}

/// Reads recorded reference noise (key [`REF_NOISE_KEY`], rank 5) at `path` onto
/// `device`.
///
/// # Shapes
/// - output: `[1, C, 1, h, w]` as stored, f32.
pub fn read_ref_noise(path: impl AsRef<Path>, device: &Device) -> Result<Tensor<5>> {
    read_rank5(path.as_ref(), REF_NOISE_KEY, device)
}

fn read_rank5(path: &Path, key: &str, device: &Device) -> Result<Tensor<5>> {
    let (values, shape) = read_finite(path, key)?;
    let dims: [usize; 5] = shape.as_slice().try_into().map_err(|_| Error::Shape {
        path: path.to_path_buf(),
        key: key.into(),
        expected: vec![0; 5],
        found: shape.clone(),
    })?;
    if dims.contains(&0) {
        return Err(Error::format(
            path,
            "tensor file",
            format!("`{key}` has shape {dims:?}, with no elements"),
        ));
    }
    Ok(Tensor::from_data(
        TensorData::new(values, dims),
        (device, DType::F32),
    ))
}

/// The f32 values and shape of float tensor `key`, refusing NaN and infinities.
fn read_finite(path: &Path, key: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let ckpt = Checkpoint::open(path)?;
    let shape = ckpt
        .shape(key)
        .ok_or_else(|| Error::MissingKey {
            path: path.to_path_buf(),
            key: key.into(),
        })?
        .to_vec();
    let values = ckpt.read_f32(key)?;
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::format(
            path,
            "tensor file",
            format!("`{key}` holds {bad} NaN or infinite value(s)"),
        ));
    }
    Ok((values, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lynx_store::safetensors_io::{Dtype, save};

    #[test]
    fn bad_input_files_are_sentences() {
        let dir = std::env::temp_dir().join(format!("lynx-inputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, key: &str, shape: &[usize], values: &[f32]| {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let p = dir.join(name);
            save(&p, &[(key, Dtype::F32, shape, &bytes)], None).unwrap();
            p
        };
        let ok = write("ok.safetensors", "embedding", &[1, 3], &[0.6, 0.8, 0.0]);
        assert_eq!(read_embedding(&ok).unwrap(), [0.6, 0.8, 0.0]);
        let nan = write("nan.safetensors", "embedding", &[3], &[0.6, f32::NAN, 0.0]);
        let e = read_embedding(&nan).unwrap_err().to_string();
        assert!(e.contains("nan.safetensors") && e.contains("1 NaN"), "{e}");
        let wrong = write("wrong.safetensors", "embedding", &[3, 1], &[0.0; 3]);
        let e = read_embedding(&wrong).unwrap_err().to_string();
        assert!(
            e.contains("wrong.safetensors") && e.contains("[3, 1]"),
            "{e}"
        );
        let device = lynx_testing::test_device();
        let e = read_latents(&ok, &device).unwrap_err().to_string();
        assert!(
            e.contains("ok.safetensors") && e.contains("`latents`"),
            "{e}"
        );
        let flat = write("flat.safetensors", "eps", &[1, 3], &[0.0; 3]);
        let e = read_ref_noise(&flat, &device).unwrap_err().to_string();
        assert!(
            e.contains("flat.safetensors") && e.contains("[1, 3]"),
            "{e}"
        );
        let good = write("eps.safetensors", "eps", &[1, 1, 1, 1, 3], &[0.0, 1.0, 2.0]);
        assert_eq!(
            read_ref_noise(&good, &device).unwrap().dims(),
            [1, 1, 1, 1, 3]
        );
    }
}

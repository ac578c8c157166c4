//! A stand-in subject for synthetic models: a random 512-d face embedding (unit norm, as
//! ArcFace gives) and a 256×256 aligned face picture, the two inputs `lynx generate
//! --face-embedding F --aligned-face P` takes for Lynx full without face models.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use lynx_core::{Error, Result};
use lynx_store::safetensors_io::{self, Dtype};

use crate::fill::Xoshiro256pp;

/// Width of an ArcFace embedding.
pub const EMBEDDING_DIM: usize = 512;
/// Side of the aligned face the Ref-adapter takes.
pub const FACE_SIDE: u32 = 256;

/// The files [`write_subject`] wrote.
#[derive(Debug, Clone)]
pub struct SubjectFiles {
    /// `face_embedding.safetensors`: key `embedding`, `[512]` f32.
    pub embedding: PathBuf,
    /// `aligned_face.png`: 256×256 RGB.
    pub aligned_face: PathBuf,
}

/// Writes `dir/face_embedding.safetensors` and `dir/aligned_face.png`, made from `seed`.
pub fn write_subject(dir: &Path, seed: u64) -> Result<SubjectFiles> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut rng = Xoshiro256pp::for_tensor(seed, "subject/embedding");
    let mut v: Vec<f32> = Vec::with_capacity(EMBEDDING_DIM);
    while v.len() < EMBEDDING_DIM {
        v.extend(rng.normal8(1.0));
    }
    v.truncate(EMBEDDING_DIM);
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    let bytes: Vec<u8> = v.iter().flat_map(|x| (x / norm).to_le_bytes()).collect();
    let embedding = dir.join("face_embedding.safetensors");
    safetensors_io::save(
        &embedding,
        &[("embedding", Dtype::F32, &[EMBEDDING_DIM], &bytes)],
        None,
    )?;
    // A soft oval "face" on a gradient: any picture does for random weights.
    let c = FACE_SIDE as f32 / 2.0;
    let image = RgbImage::from_fn(FACE_SIDE, FACE_SIDE, |x, y| {
        let (dx, dy) = ((x as f32 - c) / (0.6 * c), (y as f32 - c) / (0.8 * c));
        let inside = dx * dx + dy * dy < 1.0;
        let shade = (255.0 * y as f32 / FACE_SIDE as f32) as u8;
        if inside {
            Rgb([224, 172, 140])
        } else {
            Rgb([shade / 2, shade / 2, 128 + shade / 2])
        }
    });
    let aligned_face = dir.join("aligned_face.png");
    image
        .save(&aligned_face)
        .map_err(|e| Error::format(&aligned_face, "PNG", e))?;
    Ok(SubjectFiles {
        embedding,
        aligned_face,
    })
}

//! Identity similarity: the cosine between ArcFace embeddings, the face-resemblance
//! metric of the Lynx paper (reference photo vs. faces found in generated frames).

use burn::tensor::{DType, Tensor};
use image::RgbImage;
use lynx_core::{Error, Result};

use crate::FaceAnalyzer;
use crate::retinaface::DetectOptions;

/// Cosine similarity of two embeddings (any norm), in `[-1, 1]`.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> Result<f32> {
    if a.len() != b.len() || a.is_empty() {
        return Err(Error::input(format!(
            "cannot compare embeddings of sizes {} and {}",
            a.len(),
            b.len()
        )));
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return Err(Error::input("cannot compare with an all-zero embedding"));
    }
    Ok((dot / (na.sqrt() * nb.sqrt())) as f32)
}

/// Cosine similarity of `reference` `[1, E]` with each row of `faces` `[N, E]`, on
/// the device: `[N]`.
pub fn cosine_similarity_rows(reference: Tensor<2>, faces: Tensor<2>) -> Tensor<1> {
    let normalize = |t: Tensor<2>| {
        let t = t.cast(DType::F32);
        let n = t.clone().square().sum_dim(1).sqrt();
        t / n
    };
    let r = normalize(reference);
    let f = normalize(faces);
    let n = f.dims()[0];
    f.matmul(r.transpose()).reshape([n])
}

/// Identity similarity of each frame to a reference embedding: the largest face of the
/// frame is detected, aligned to 112×112 and embedded. `None` for frames without a face.
pub fn frame_similarities(
    analyzer: &FaceAnalyzer,
    reference: &[f32],
    frames: &[RgbImage],
    options: &DetectOptions,
) -> Result<Vec<Option<f32>>> {
    frames
        .iter()
        .map(|frame| {
            let faces = analyzer.detector()?.detect(frame, options)?;
            let Some(face) = faces
                .into_iter()
                .max_by(|a, b| a.area().total_cmp(&b.area()))
            else {
                return Ok(None);
            };
            let emb = analyzer.embed_with_landmarks(frame, &face.landmarks)?;
            cosine_similarity(reference, &emb).map(Some)
        })
        .collect()
}

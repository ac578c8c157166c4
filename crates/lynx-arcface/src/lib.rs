//! The face front end of lynx-rs: from one photo to the five landmarks, the aligned crops
//! and the ArcFace identity embedding the Lynx adapters consume.
//!
//! ```text
//! photo (RGB u8) ─ RetinaFace ─▶ largest face's 5 landmarks (or given as JSON)
//!        │                              │ similarity transform (Umeyama)
//!        └──────── warp ◀───────────────┘
//!                   ├─▶ 112×112 crop ─ ArcFace IR-SE ─▶ embedding [512], ‖·‖ = 1 (ID-adapter)
//!                   └─▶ 256×256 extended crop (Ref-adapter)
//! ```
//!
//! | module | mirrors | what |
//! |---|---|---|
//! | [`image_io`] | — | PNG/JPEG/WebP → RGB u8 via the `image` crate |
//! | [`landmarks`] | insightface `kps` order | five points, JSON in/out |
//! | [`align`] | Lynx `modules/common/face_utils.py` | template, Umeyama, `warpAffine` |
//! | [`retinaface`] | facexlib `detection/retinaface.py`, `retinaface_net.py`, `retinaface_utils.py` | detector, priors, decode, NMS |
//! | [`arcface`] | facexlib `recognition/arcface_arch.py` (`Backbone`, `ir_se`) | identity embedding |
//! | [`similarity`] | Lynx paper's identity metric | cosine similarity |
//! | [`nn`] | facexlib's `conv_bn` & co. | convolutions with BatchNorm folded at load time |
//!
//! Lynx itself detects landmarks with insightface's SCRFD; RetinaFace gives the same five
//! points and ships as `.pth` (`detection_mobilenet0.25_Final.pth`,
//! `detection_Resnet50_Final.pth`), which load unchanged, as does
//! `recognition_arcface_ir_se50.pth`.
//!
//! # Shapes
//! - RetinaFace: `[1, 3, H, W]` BGR − (104, 117, 123) → `loc` `[1, N, 4]`, `conf`
//!   `[1, N, 2]`, `landmarks` `[1, N, 10]`
//! - ArcFace: `[B, 3, 112, 112]` BGR in `[-1, 1]` → `[B, emb]`, unit norm

#![warn(missing_docs)]

pub mod align;
pub mod arcface;
pub mod image_io;
pub mod landmarks;
pub mod nn;
pub mod retinaface;
pub mod similarity;
mod webp_check;

use std::path::Path;

use burn::tensor::{DType, Device};
use image::RgbImage;
use lynx_core::{Error, Result};
use lynx_store::{Loader, load_module};

pub use align::{Affine, align_face, alignment_matrix};
pub use arcface::{ArcFace, ArcFaceConfig};
/// The `image` crate, whose `RgbImage` this crate takes and returns.
pub use image;
pub use image_io::{load_rgb, save_png};
pub use landmarks::Landmarks;
pub use retinaface::{DetectOptions, Detection, RetinaFace};
pub use similarity::{cosine_similarity, cosine_similarity_rows};

/// Side of the crop ArcFace takes.
pub const ARCFACE_SIZE: u32 = 112;
/// Side of the extended crop the Ref-adapter takes.
pub const REF_FACE_SIZE: u32 = 256;

/// `w`, or `w.module` when every key starts with `module.`: models trained with
/// `DataParallel` are saved so (facexlib strips it the same way).
fn state_dict<'a>(w: &Loader<'a>) -> Loader<'a> {
    let ckpt = w.checkpoint();
    if !ckpt.is_empty() && ckpt.keys().all(|k| k.starts_with("module.")) {
        w.sub("module")
    } else {
        w.clone()
    }
}

/// Loads an ArcFace IR-SE backbone (facexlib `.pth` or safetensors with its keys) in
/// f32. `depths` (units per stage) is needed only when two consecutive stages have the
/// same width; see [`ArcFaceConfig::from_checkpoint`].
pub fn load_arcface(
    path: impl AsRef<Path>,
    device: &Device,
    depths: Option<&[usize]>,
) -> Result<ArcFace> {
    load_module(path, device, DType::F32, |w| {
        let w = state_dict(w);
        let cfg = ArcFaceConfig::from_checkpoint(&w, depths)?;
        Ok(ArcFace::load(&w, &cfg))
    })
}

/// Loads a RetinaFace detector (facexlib `.pth` or safetensors with its keys; the
/// backbone is chosen from the keys) in f32.
pub fn load_retinaface(path: impl AsRef<Path>, device: &Device) -> Result<RetinaFace> {
    load_module(path, device, DType::F32, |w| {
        RetinaFace::load(&state_dict(w))
    })
}

/// What the Lynx adapters need from one photo.
#[derive(Debug, Clone)]
pub struct PreparedFace {
    /// The face the detector chose (the largest); `None` when landmarks were given.
    pub detection: Option<Detection>,
    /// The five landmarks used, in photo pixels.
    pub landmarks: Landmarks,
    /// The 112×112 crop ArcFace saw.
    pub aligned_112: RgbImage,
    /// The 256×256 extended crop for the Ref-adapter.
    pub aligned_256_extended: RgbImage,
    /// ArcFace embedding, unit norm.
    pub embedding: Vec<f32>,
}

/// ArcFace plus an optional detector: photo → landmarks → crops → embedding.
#[derive(Debug)]
pub struct FaceAnalyzer {
    arcface: ArcFace,
    detector: Option<RetinaFace>,
    /// Detection settings.
    pub options: DetectOptions,
}

impl FaceAnalyzer {
    /// ArcFace and, to find faces in photos, a detector.
    pub fn new(arcface: ArcFace, detector: Option<RetinaFace>) -> Self {
        Self {
            arcface,
            detector,
            options: DetectOptions::default(),
        }
    }

    /// The ArcFace backbone.
    pub fn arcface(&self) -> &ArcFace {
        &self.arcface
    }

    /// The detector, or an error saying that landmarks must be given without one.
    pub fn detector(&self) -> Result<&RetinaFace> {
        self.detector.as_ref().ok_or_else(|| {
            Error::input(
                "no face detector is loaded: give the five landmarks, or a RetinaFace checkpoint",
            )
        })
    }

    /// The landmarks of the largest face in `photo`; an error when there is no face.
    pub fn landmarks(&self, photo: &RgbImage) -> Result<Landmarks> {
        Ok(self
            .detector()?
            .largest_face(photo, &self.options)?
            .landmarks)
    }

    /// Embeds an aligned 112×112 crop.
    pub fn embed_aligned(&self, crop: &RgbImage) -> Result<Vec<f32>> {
        let emb = self.arcface.embed(crop)?;
        let device = emb.device();
        emb.into_data()
            .convert_dtype(DType::F32)
            .try_into_vec::<f32>()
            .map_err(|e| Error::read_back(&device, "the face embedding", e))
    }

    /// Aligns the face at `landmarks` in `photo` and embeds it.
    pub fn embed_with_landmarks(
        &self,
        photo: &RgbImage,
        landmarks: &Landmarks,
    ) -> Result<Vec<f32>> {
        self.embed_aligned(&align_face(photo, landmarks, ARCFACE_SIZE, false)?)
    }

    /// Everything the adapters need from `photo`: landmarks (detected when not given),
    /// both crops and the embedding.
    pub fn prepare(&self, photo: &RgbImage, landmarks: Option<Landmarks>) -> Result<PreparedFace> {
        let (detection, landmarks) = match landmarks {
            Some(l) => (None, l),
            None => {
                let d = self.detector()?.largest_face(photo, &self.options)?;
                (Some(d), d.landmarks)
            }
        };
        let aligned_112 = align_face(photo, &landmarks, ARCFACE_SIZE, false)?;
        let aligned_256_extended = align_face(photo, &landmarks, REF_FACE_SIZE, true)?;
        let embedding = self.embed_aligned(&aligned_112)?;
        Ok(PreparedFace {
            detection,
            landmarks,
            aligned_112,
            aligned_256_extended,
            embedding,
        })
    }
}

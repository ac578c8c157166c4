//! Steps 3a and 3b of [`LynxPipeline`]'s generation: the subject's face embedding and the
//! reference latents of its aligned face (bytedance/lynx `modules/full/lynx_pipeline.py`,
//! where `generate_t2v` VAE-encodes the face and runs the reference pass), then the
//! reference pass through the DiT and the adapters' per-block inputs.

use burn::tensor::{DType, Tensor, TensorData};
use image::RgbImage;
use lynx_adapters::Conditions;
use lynx_arcface::PreparedFace;
use lynx_core::{Error, Result};
use lynx_dit::{DitLora, WanTransformer};

use super::LynxPipeline;
use crate::noise::NoiseSource;
use crate::plan::Plan;
use crate::request::{GenerateRequest, Subject};

/// The subject, ready for the DiT: face embedding `[1, 1, E]` and, for Lynx full, the
/// reference latents of the face and of the mid-grey image.
pub(super) struct SubjectInputs {
    face: Tensor<3>,
    latents: Option<(Tensor<5>, Tensor<5>)>,
}

impl LynxPipeline {
    /// Step 3a: the subject's face embedding `[1, 1, E]` and, for Lynx full, the VAE
    /// latents of its aligned face and of the mid-grey image (the face models and the
    /// VAE run here, before the DiT is needed); for a photo also what the face models
    /// made of it.
    pub(super) fn prepare_subject(
        &self,
        req: &GenerateRequest,
        plan: &Plan,
    ) -> Result<(Option<SubjectInputs>, Option<PreparedFace>)> {
        let Some(subject) = &req.subject else {
            return Ok((None, None));
        };
        if plan.variant.is_none() {
            return Err(Error::input(
                "a subject was given but no adapters are loaded (pass the lynx_full/ or \
                 lynx_lite/ folder)",
            ));
        }
        let (embedding, aligned, prepared) = match subject {
            Subject::Prepared {
                aligned_face,
                embedding,
            } => (embedding.clone(), aligned_face.clone(), None),
            Subject::Photo { image, landmarks } => {
                let face = self.components.face()?.ok_or_else(|| {
                    Error::input(
                        "a photo subject needs the ArcFace checkpoint (PipelineOptions::arcface)",
                    )
                })?;
                let prepared = face.prepare(image, *landmarks)?;
                let crop = prepared.aligned_256_extended.clone();
                (prepared.embedding.clone(), Some(crop), Some(prepared))
            }
        };
        self.components.release();
        let d = embedding.len();
        let face = Tensor::<3>::from_data(
            TensorData::new(embedding, [1, 1, d]),
            (self.device(), DType::F32),
        );
        let latents = match (plan.reference, aligned) {
            (false, _) => None,
            (true, Some(aligned)) => Some(self.reference_latents(&aligned, &req.noise)?),
            (true, None) => {
                return Err(Error::input(
                    "Lynx (full) needs the aligned 256×256 face crop for its Ref-adapter: \
                     give a photo, or the crop with the embedding",
                ));
            }
        };
        Ok((Some(SubjectInputs { face, latents }), prepared))
    }

    /// The VAE latents of the aligned face and of the all-zero (mid-grey) image, each
    /// sampled with the noise the reference draws for it.
    fn reference_latents(
        &self,
        aligned: &RgbImage,
        noise: &NoiseSource,
    ) -> Result<(Tensor<5>, Tensor<5>)> {
        let (w, h) = aligned.dimensions();
        let (w, h) = (w as usize, h as usize);
        if w % 8 != 0 || h % 8 != 0 {
            return Err(Error::input(format!(
                "the aligned face is {w}×{h}; the VAE needs sides divisible by 8 (the crop is 256×256)"
            )));
        }
        let device = self.device();
        // [H, W, 3] u8 → [1, 3, 1, H, W] in [-1, 1]
        let pixels: Vec<f32> = aligned
            .as_raw()
            .iter()
            .map(|&v| v as f32 / 255.0 * 2.0 - 1.0)
            .collect();
        let image =
            Tensor::<3>::from_data(TensorData::new(pixels, [h, w, 3]), (device, DType::F32))
                .permute([2, 0, 1])
                .unsqueeze_dims::<5>(&[0, 2]);
        let vae = self.components.vae()?;
        let latents = |img: Tensor<5>| -> Result<Tensor<5>> {
            let dist = vae.encode(img)?;
            let eps = noise.ref_eps(dist.mean.dims(), vae.dtype(), device)?;
            vae.normalize(dist.sample(eps)?)
        };
        let cond = latents(image.clone())?;
        let uncond = latents(image.zeros_like())?;
        drop(vae);
        self.components.release();
        Ok((cond, uncond))
    }

    /// Step 3b: with the DiT, the reference pass over the subject's latents (Lynx full)
    /// and the adapters' per-block inputs, conditional and unconditional.
    pub(super) fn condition(
        &self,
        dit: &WanTransformer,
        lora: Option<&DitLora>,
        subject: Option<SubjectInputs>,
        ref_text: Option<&Tensor<3>>,
        plan: &Plan,
    ) -> Result<Option<Conditions>> {
        let Some(subject) = subject else {
            return Ok(None);
        };
        let features = match (subject.latents, ref_text) {
            (Some((c, u)), Some(text)) if plan.use_cfg => {
                let mut f = dit
                    .reference_features_lora(&[(c, text.clone()), (u, text.clone())], lora)?
                    .into_iter();
                match (f.next(), f.next()) {
                    (Some(c), Some(u)) => Some((c, u)),
                    _ => return Err(Error::input("the reference pass returned too few features")),
                }
            }
            // Without guidance only the conditional pass reads the features: no
            // unconditional reference pass (its adapter inputs are made but not used).
            (Some((c, _)), Some(text)) => {
                let f = dit
                    .reference_features_lora(&[(c, text.clone())], lora)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::input("the reference pass returned no features"))?;
                Some((f.clone(), f))
            }
            _ => None,
        };
        let Some(adapters) = self.components.adapters(dit)? else {
            return Err(Error::input(
                "a subject was given but no adapters are loaded (pass the lynx_full/ or \
                 lynx_lite/ folder)",
            ));
        };
        let (d, want) = (subject.face.dims()[2], adapters.embedding_dim());
        if d != want {
            return Err(Error::input(format!(
                "the face embedding has {d} values, the ID-adapter takes {want}"
            )));
        }
        let features = features.as_ref().map(|(c, u)| (c.as_slice(), u.as_slice()));
        let conditions =
            adapters.conditions(subject.face, plan.ip_scale, features, plan.ref_scale)?;
        drop(adapters);
        self.components.release();
        Ok(Some(conditions))
    }
}

//! RetinaFace face detector in facexlib's layout (`detection/retinaface.py`): backbone,
//! FPN, three SSH context modules and per-level class / box / landmark heads, then priors,
//! decoding, score threshold and NMS on the host.
//!
//! # Shapes
//! - input: `[1, 3, H, W]`, BGR pixel values minus (104, 117, 123)
//! - heads (`N` priors = Σ over strides 8, 16, 32 of ⌈H/s⌉·⌈W/s⌉·2): `loc` `[1, N, 4]`,
//!   `conf` `[1, N, 2]` (softmaxed; column 1 is the face score), `landmarks` `[1, N, 10]`

pub mod backbone;
pub mod boxes;
pub mod fpn;

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, Tensor, TensorData};
use image::RgbImage;
use lynx_core::{Error, Result};
use lynx_store::Loader;

pub use backbone::Body;
pub use boxes::Detection;
use fpn::{Fpn, Ssh};

use crate::landmarks::Landmarks;
use crate::nn::{Conv, geom, out_channels};
use backbone::{MobileNetV1, ResNet50};

/// BGR channel means subtracted from the input.
pub const MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];

/// The raw network outputs for one image.
#[derive(Debug, Clone)]
pub struct RawHeads {
    /// `[1, N, 4]` box regressions.
    pub loc: Tensor<3>,
    /// `[1, N, 2]` softmaxed (background, face) scores.
    pub conf: Tensor<3>,
    /// `[1, N, 10]` landmark regressions.
    pub landmarks: Tensor<3>,
}

/// Detection settings (`detect_faces` arguments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectOptions {
    /// Faces scoring at most this are dropped (facexlib's default 0.8).
    pub conf_threshold: f32,
    /// IoU above which the lower-scoring of two boxes is dropped (0.4).
    pub nms_threshold: f32,
    /// When set, photos whose longer side exceeds it are scaled down (linear filter) before
    /// detection and the results scaled back; `None` runs at the original size, as
    /// facexlib's `use_origin_size=True`.
    pub max_side: Option<u32>,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            conf_threshold: 0.8,
            nms_threshold: 0.4,
            max_side: None,
        }
    }
}

/// RetinaFace with BatchNorm folded.
#[derive(Module, Debug)]
pub struct RetinaFace {
    body: Body,
    fpn: Fpn,
    ssh1: Ssh,
    ssh2: Ssh,
    ssh3: Ssh,
    /// `ClassHead.i.conv1x1`, `[anchors·2, C, 1, 1]` with bias.
    class_head: Vec<Conv>,
    /// `BboxHead.i.conv1x1`, `[anchors·4, C, 1, 1]`.
    bbox_head: Vec<Conv>,
    /// `LandmarkHead.i.conv1x1`, `[anchors·10, C, 1, 1]`.
    landmark_head: Vec<Conv>,
}

impl RetinaFace {
    /// Builds the detector from a facexlib state dict under `l` (a leading `module.`, as
    /// DataParallel training leaves it, is handled by [`crate::load_retinaface`]).
    /// The backbone is chosen from the keys: `body.stage1.*` → MobileNetV1 ×0.25,
    /// `body.layer1.*` → ResNet-50.
    pub fn load(l: &Loader) -> Result<Self> {
        let body = l.sub("body");
        let (body, ins) = if body.has_sub("stage1") {
            let (m, outs) = MobileNetV1::load(&body)?;
            (Body::MobileNet(m), outs)
        } else if body.has_sub("layer1") {
            let (r, outs) = ResNet50::load(&body);
            (Body::ResNet50(r), outs)
        } else {
            return Err(Error::format(
                l.checkpoint().path(),
                "RetinaFace checkpoint",
                format!(
                    "no `{}` (MobileNetV1) or `{}` (ResNet-50) tensors: not a facexlib \
                     RetinaFace state dict",
                    body.key("stage1.*"),
                    body.key("layer1.*")
                ),
            ));
        };
        let c = out_channels(&l.sub("fpn.output1.0"), "weight");
        // facexlib: LeakyReLU(0.1) in FPN and SSH when out_channels <= 64, else ReLU.
        let slope = Some(if c <= 64 { 0.1 } else { 0.0 });
        let (fpn, c) = Fpn::load(&l.sub("fpn"), ins, slope);
        let ssh = |name: &str| Ssh::load(&l.sub(name), c, slope);
        let (ssh1, ssh2, ssh3) = (ssh("ssh1"), ssh("ssh2"), ssh("ssh3"));
        let heads = |name: &str, per_anchor: usize| -> Result<Vec<Conv>> {
            (0..3)
                .map(|i| {
                    let h = l.sub(name).sub(i).sub("conv1x1");
                    let (conv, out) = Conv::load_plain(&h, c, geom(1, 1, 0), true);
                    if h.has("weight") && out != 2 * per_anchor {
                        return Err(Error::format(
                            l.checkpoint().path(),
                            "RetinaFace checkpoint",
                            format!(
                                "`{}` has {out} outputs; the priors need 2 anchors × \
                                 {per_anchor} = {}",
                                h.key("weight"),
                                2 * per_anchor
                            ),
                        ));
                    }
                    Ok(conv)
                })
                .collect()
        };
        Ok(Self {
            body,
            fpn,
            ssh1,
            ssh2,
            ssh3,
            class_head: heads("ClassHead", 2)?,
            bbox_head: heads("BboxHead", 4)?,
            landmark_head: heads("LandmarkHead", 10)?,
        })
    }

    /// Runs the network on `[1, 3, H, W]` mean-subtracted BGR.
    ///
    /// # Shapes
    /// - input `[1, 3, H, W]` → `loc` `[1, N, 4]`, `conf` `[1, N, 2]`, `landmarks`
    ///   `[1, N, 10]` (`N` priors).
    pub fn forward(&self, x: Tensor<4>) -> RawHeads {
        let dtype = self.class_head[0].weight.val().dtype();
        let feats = self.fpn.forward(self.body.forward(x.cast(dtype)));
        let [f1, f2, f3] = feats;
        let feats = [
            self.ssh1.forward(f1),
            self.ssh2.forward(f2),
            self.ssh3.forward(f3),
        ];
        let head = |convs: &[Conv], k: usize| {
            let parts = feats
                .iter()
                .zip(convs)
                .map(|(f, conv)| {
                    let y = conv.forward(f.clone()).cast(DType::F32);
                    let b = y.dims()[0];
                    // [B, A·k, H, W] → [B, H, W, A·k] → [B, H·W·A, k]
                    y.permute([0, 2, 3, 1]).reshape([b as i32, -1, k as i32])
                })
                .collect();
            Tensor::cat(parts, 1)
        };
        RawHeads {
            loc: head(&self.bbox_head, 4),
            conf: softmax(head(&self.class_head, 2), 2),
            landmarks: head(&self.landmark_head, 10),
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.class_head[0].weight.val().device()
    }

    /// Finds the faces in an RGB photo, best score first.
    pub fn detect(&self, image: &RgbImage, options: &DetectOptions) -> Result<Vec<Detection>> {
        if image.width() == 0 || image.height() == 0 {
            return Err(Error::input("cannot detect faces in an empty image"));
        }
        let resized = match options.max_side {
            Some(max) if image.width().max(image.height()) > max => {
                let r = f64::from(max) / f64::from(image.width().max(image.height()));
                Some(downscale(image, r))
            }
            _ => None,
        };
        let input = resized.as_ref().unwrap_or(image);
        let (h, w) = (input.height() as usize, input.width() as usize);
        // Photo pixels per input pixel, along x and y.
        let (rx, ry) = (
            image.width() as f32 / w as f32,
            image.height() as f32 / h as f32,
        );
        let heads = self.forward(bgr_minus_mean(input, &self.device()));
        let host = |t: Tensor<3>| -> Result<Vec<f32>> {
            t.into_data()
                .convert_dtype(DType::F32)
                .try_into_vec::<f32>()
                .map_err(|e| Error::input(format!("reading detector output: {e:?}")))
        };
        let (loc, conf, ldm) = (host(heads.loc)?, host(heads.conf)?, host(heads.landmarks)?);
        let priors = boxes::priors(h, w);
        if priors.len() * 4 != loc.len() {
            return Err(Error::input(format!(
                "detector produced {} boxes for {} priors: the checkpoint's heads do not use \
                 2 anchors per position",
                loc.len() / 4,
                priors.len()
            )));
        }
        // Corners and landmarks from [0, 1] to input pixels (`* self.scale`), then to
        // photo pixels.
        let (sx, sy) = (w as f32, h as f32);
        let mut cand_boxes = Vec::new();
        let mut cand = Vec::new();
        for (n, p) in priors.iter().enumerate() {
            let score = conf[2 * n + 1];
            if score <= options.conf_threshold {
                continue;
            }
            let l: [f32; 4] = loc[4 * n..4 * n + 4].try_into().unwrap();
            let b = boxes::decode_box(l, *p);
            let bbox = [
                b[0] * sx * rx,
                b[1] * sy * ry,
                b[2] * sx * rx,
                b[3] * sy * ry,
            ];
            let m: [f32; 10] = ldm[10 * n..10 * n + 10].try_into().unwrap();
            let pts = boxes::decode_landmarks(m, *p).map(|[x, y]| [x * sx * rx, y * sy * ry]);
            cand_boxes.push(bbox);
            cand.push(Detection {
                bbox,
                score,
                landmarks: Landmarks(pts),
            });
        }
        let scores: Vec<f32> = cand.iter().map(|d| d.score).collect();
        let keep = boxes::nms(&cand_boxes, &scores, options.nms_threshold);
        Ok(keep.into_iter().map(|i| cand[i]).collect())
    }

    /// The largest face (by box area) in the photo, as Lynx picks it; an error when the
    /// detector finds none.
    pub fn largest_face(&self, image: &RgbImage, options: &DetectOptions) -> Result<Detection> {
        let faces = self.detect(image, options)?;
        faces
            .into_iter()
            .max_by(|a, b| a.area().total_cmp(&b.area()))
            .ok_or(Error::NoFace {
                width: image.width(),
                height: image.height(),
                threshold: options.conf_threshold,
            })
    }
}

/// An RGB photo as the detector's input: `[1, 3, H, W]` BGR minus [`MEAN_BGR`].
pub fn bgr_minus_mean(image: &RgbImage, device: &Device) -> Tensor<4> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut planes = vec![0f32; 3 * w * h];
    for (i, px) in image.pixels().enumerate() {
        for c in 0..3 {
            planes[c * w * h + i] = f32::from(px.0[2 - c]) - MEAN_BGR[c];
        }
    }
    Tensor::from_data(TensorData::new(planes, [1, 3, h, w]), (device, DType::F32))
}

/// Scales `image` down by `r` (< 1) with a triangle (linear) filter spanning the source
/// pixels that fall in each output pixel.
fn downscale(image: &RgbImage, r: f64) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    let (nw, nh) = (
        ((f64::from(w) * r).round() as u32).max(1),
        ((f64::from(h) * r).round() as u32).max(1),
    );
    image::imageops::resize(image, nw, nh, image::imageops::FilterType::Triangle)
}

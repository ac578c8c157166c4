//! Face alignment: the similarity transform taking the five landmarks onto the ArcFace
//! template, and the bilinear warp that cuts the aligned crop.
//!
//! Mirrors Lynx `modules/common/face_utils.py` (`get_arcface_dst`, `estimate_norm`,
//! `align_face`), which uses `skimage.transform.SimilarityTransform.estimate` (Umeyama's
//! least squares) and `cv2.warpAffine` (bilinear, constant border 0).
//!
//! - 112 crop (ArcFace input): template × 1.
//! - Extended 256 crop (Ref-adapter input): template moved down 10 px, scaled by 0.8 about
//!   (56, 56). Like every size that is a multiple of 128 but not of 112, 256 then scales
//!   the template by `size / 128` and shifts it right by `8 · size / 128` (`estimate_norm`).
//!
//! The template arithmetic is done in f32 as the reference does it on `float32` arrays;
//! the transform is estimated in f64. The warp follows the bilinear `warpAffine` of
//! OpenCV ≥ 4.11 (f32 coordinates and interpolation, round half to even); on the fixture
//! 99.9% of crop pixels are identical and the rest one level off. (Older OpenCV rounds
//! source coordinates to 1/32 pixel, which moves high-contrast pixels by a few levels.)

use image::RgbImage;
use lynx_core::{Error, Result};

use crate::landmarks::Landmarks;

/// The ArcFace five-point template for a 112×112 crop.
pub const ARCFACE_TEMPLATE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A 2×3 affine matrix `[[a, b, tx], [c, d, ty]]` mapping `(x, y, 1)` of the photo to
/// crop pixels (OpenCV's convention for `warpAffine`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [[f64; 3]; 2]);

impl Affine {
    /// Applies the transform to a point.
    pub fn apply(&self, [x, y]: [f64; 2]) -> [f64; 2] {
        let m = &self.0;
        [
            m[0][0] * x + m[0][1] * y + m[0][2],
            m[1][0] * x + m[1][1] * y + m[1][2],
        ]
    }

    /// The inverse transform (`cv2.invertAffineTransform`), or `None` when singular.
    pub fn invert(&self) -> Option<Affine> {
        let [[a, b, tx], [c, d, ty]] = self.0;
        let det = a * d - b * c;
        if det == 0.0 || !det.is_finite() {
            return None;
        }
        let inv = 1.0 / det;
        let (ia, ib, ic, id) = (d * inv, -b * inv, -c * inv, a * inv);
        Some(Affine([
            [ia, ib, -ia * tx - ib * ty],
            [ic, id, -ic * tx - id * ty],
        ]))
    }
}

/// The ArcFace template for a `size`×`size` crop, plain or extended (see module docs),
/// computed in f32 as `get_arcface_dst` + `estimate_norm` do. Sizes that are multiples of
/// 128 (and not of 112) scale by `size / 128` and shift right by `8 · size / 128`.
pub fn arcface_template(size: u32, extended: bool) -> [[f32; 2]; 5] {
    let (ratio, shift) = if size.is_multiple_of(112) {
        ((f64::from(size) / 112.0) as f32, 0.0)
    } else {
        let r = (f64::from(size) / 128.0) as f32;
        (r, 8.0 * r)
    };
    ARCFACE_TEMPLATE.map(|[x, y]| {
        let (x, y) = if extended {
            let y = y + 10.0;
            ((x - 56.0) * 0.8 + 56.0, (y - 56.0) * 0.8 + 56.0)
        } else {
            (x, y)
        };
        [x * ratio + shift, y * ratio]
    })
}

/// Least-squares similarity transform (rotation, uniform scale, translation) taking `src`
/// onto `dst`: Umeyama's estimate, which for two dimensions has this closed form.
///
/// Fails when the source points all coincide.
pub fn estimate_similarity(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Result<Affine> {
    if src.len() != dst.len() || src.is_empty() {
        return Err(Error::input(format!(
            "similarity transform needs matching point sets, got {} and {}",
            src.len(),
            dst.len()
        )));
    }
    let n = src.len() as f64;
    let mean = |p: &[[f64; 2]]| {
        let s = p.iter().fold([0.0, 0.0], |a, q| [a[0] + q[0], a[1] + q[1]]);
        [s[0] / n, s[1] / n]
    };
    let (ms, md) = (mean(src), mean(dst));
    // c = Σ p·q, s = Σ p×q over centred points; var = Σ |p|².
    let (mut c, mut s, mut var) = (0.0, 0.0, 0.0);
    for (p, q) in src.iter().zip(dst) {
        let (px, py) = (p[0] - ms[0], p[1] - ms[1]);
        let (qx, qy) = (q[0] - md[0], q[1] - md[1]);
        c += px * qx + py * qy;
        s += px * qy - py * qx;
        var += px * px + py * py;
    }
    let norm = c.hypot(s);
    if var <= 0.0 || norm == 0.0 || !norm.is_finite() {
        return Err(Error::input(
            "landmarks are degenerate (all points coincide): no similarity transform exists",
        ));
    }
    // R = [[c, -s], [s, c]] / norm, scale = norm / var.
    let (a, b) = (c / var, s / var);
    Ok(Affine([
        [a, -b, md[0] - (a * ms[0] - b * ms[1])],
        [b, a, md[1] - (b * ms[0] + a * ms[1])],
    ]))
}

/// The transform from photo pixels to a `size`×`size` aligned crop (`estimate_norm`).
pub fn alignment_matrix(landmarks: &Landmarks, size: u32, extended: bool) -> Result<Affine> {
    if size == 0 || (!size.is_multiple_of(112) && !size.is_multiple_of(128)) {
        // The reference asserts this; 128-multiples shift the template by 8·ratio in x.
        return Err(Error::input(format!(
            "aligned crop size must be a multiple of 112 or 128, got {size}"
        )));
    }
    let template = arcface_template(size, extended);
    let dst = template.map(|[x, y]| [f64::from(x), f64::from(y)]);
    estimate_similarity(&landmarks.to_f64(), &dst)
}

/// Cuts the aligned `size`×`size` crop out of `image` (`align_face`).
pub fn align_face(
    image: &RgbImage,
    landmarks: &Landmarks,
    size: u32,
    extended: bool,
) -> Result<RgbImage> {
    let m = alignment_matrix(landmarks, size, extended)?;
    warp_affine(image, &m, size, size)
}

/// `cv2.warpAffine(image, m, (width, height), flags=INTER_LINEAR, borderValue=0)`:
/// every output pixel samples `m⁻¹·(x, y)` bilinearly, pixels outside the photo count
/// as black. Arithmetic as OpenCV ≥ 4.11 (f32 matrix and coordinates, f32
/// interpolation, rounding half to even).
pub fn warp_affine(image: &RgbImage, m: &Affine, width: u32, height: u32) -> Result<RgbImage> {
    let inv = m
        .invert()
        .ok_or_else(|| Error::input(format!("alignment transform {m:?} is not invertible")))?;
    let [[m0, m1, m2], [m3, m4, m5]] = inv.0.map(|r| r.map(|v| v as f32));
    let (sw, sh) = (image.width() as i64, image.height() as i64);
    let src = image.as_raw();
    let pixel = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= sw || y >= sh {
            return [0.0; 3];
        }
        let i = ((y * sw + x) * 3) as usize;
        [
            f32::from(src[i]),
            f32::from(src[i + 1]),
            f32::from(src[i + 2]),
        ]
    };
    let mut out = RgbImage::new(width, height);
    let dst = &mut *out;
    for y in 0..height {
        let yf = y as f32;
        let (bx, by) = (yf.mul_add(m1, m2), yf.mul_add(m4, m5));
        for x in 0..width {
            let xf = x as f32;
            let sx = xf.mul_add(m0, bx);
            let sy = xf.mul_add(m3, by);
            let (fx, fy) = (sx.floor(), sy.floor());
            let (ax, ay) = (sx - fx, sy - fy);
            let (ix, iy) = (fx as i64, fy as i64);
            let p00 = pixel(ix, iy);
            let p01 = pixel(ix + 1, iy);
            let p10 = pixel(ix, iy + 1);
            let p11 = pixel(ix + 1, iy + 1);
            let o = ((y * width + x) * 3) as usize;
            for c in 0..3 {
                let v0 = ax.mul_add(p01[c] - p00[c], p00[c]);
                let v1 = ax.mul_add(p11[c] - p10[c], p10[c]);
                let v = ay.mul_add(v1 - v0, v0);
                dst[o + c] = v.round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(out)
}

//! Prior boxes, decoding with the variances, and non-maximum suppression (facexlib
//! `detection/retinaface_utils.py` `PriorBox`, `decode`, `decode_landm`, and
//! `torchvision.ops.nms` as `py_cpu_nms` calls it). Host-side f32, in the reference's
//! operation order; the inputs are a few thousand rows.

use crate::landmarks::Landmarks;

/// Anchor sizes (pixels) per pyramid level, and the level strides.
pub const MIN_SIZES: [[f32; 2]; 3] = [[16.0, 32.0], [64.0, 128.0], [256.0, 512.0]];
/// The strides of the three pyramid levels.
pub const STEPS: [usize; 3] = [8, 16, 32];
/// Centre and size variances of the box encoding.
pub const VARIANCE: [f32; 2] = [0.1, 0.2];

/// One face: box corners and landmarks in photo pixels, and the face score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Face score in `[0, 1]`.
    pub score: f32,
    /// The five landmarks.
    pub landmarks: Landmarks,
}

impl Detection {
    /// Box area in square pixels.
    pub fn area(&self) -> f32 {
        let [x1, y1, x2, y2] = self.bbox;
        (x2 - x1) * (y2 - y1)
    }

    /// The row layout of facexlib's `detect_faces`: `[x1, y1, x2, y2, score, 5 × (x, y)]`.
    pub fn to_row(&self) -> [f32; 15] {
        let mut row = [0.0; 15];
        row[..4].copy_from_slice(&self.bbox);
        row[4] = self.score;
        for (i, [x, y]) in self.landmarks.0.iter().enumerate() {
            row[5 + 2 * i] = *x;
            row[6 + 2 * i] = *y;
        }
        row
    }
}

/// The priors of an `height`×`width` input, `[cx, cy, w, h]` relative to the image, in
/// the order of the network's outputs (level, row, column, anchor). Computed in f64 and
/// rounded once, as `PriorBox` builds them in Python floats.
pub fn priors(height: usize, width: usize) -> Vec<[f32; 4]> {
    let (h, w) = (height as f64, width as f64);
    let mut out = Vec::new();
    for (sizes, &step) in MIN_SIZES.iter().zip(&STEPS) {
        let (fh, fw) = (height.div_ceil(step), width.div_ceil(step));
        let s = step as f64;
        for i in 0..fh {
            for j in 0..fw {
                for &m in sizes {
                    let m = f64::from(m);
                    out.push([
                        ((j as f64 + 0.5) * s / w) as f32,
                        ((i as f64 + 0.5) * s / h) as f32,
                        (m / w) as f32,
                        (m / h) as f32,
                    ]);
                }
            }
        }
    }
    out
}

/// Decodes one box regression `[dx, dy, dw, dh]` against its prior, into corners
/// relative to the image (`decode`).
pub fn decode_box(loc: [f32; 4], p: [f32; 4]) -> [f32; 4] {
    let cx = p[0] + loc[0] * VARIANCE[0] * p[2];
    let cy = p[1] + loc[1] * VARIANCE[0] * p[3];
    let w = p[2] * (loc[2] * VARIANCE[1]).exp();
    let h = p[3] * (loc[3] * VARIANCE[1]).exp();
    let (x1, y1) = (cx - w / 2.0, cy - h / 2.0);
    [x1, y1, w + x1, h + y1]
}

/// Decodes five landmark offsets against their prior (`decode_landm`).
pub fn decode_landmarks(pre: [f32; 10], p: [f32; 4]) -> [[f32; 2]; 5] {
    std::array::from_fn(|k| {
        [
            p[0] + pre[2 * k] * VARIANCE[0] * p[2],
            p[1] + pre[2 * k + 1] * VARIANCE[0] * p[3],
        ]
    })
}

/// `torchvision.ops.nms`: visits boxes by descending score and drops every later box
/// whose IoU with a kept one exceeds `threshold`. Returns kept indices, best first.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let a = &boxes[i];
        for &j in &order[n + 1..] {
            if suppressed[j] {
                continue;
            }
            let b = &boxes[j];
            let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
            let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
            let inter = iw * ih;
            let iou = inter / (area(a) + area(b) - inter);
            if iou > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

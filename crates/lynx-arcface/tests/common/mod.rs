//! Helpers shared by the parity tests.
#![allow(dead_code)]

use burn::tensor::DType;
use image::RgbImage;
use lynx_arcface::Landmarks;
use lynx_store::Checkpoint;

pub fn vec_f64(ckpt: &Checkpoint, key: &str) -> Vec<f64> {
    ckpt.read(key)
        .unwrap()
        .convert_dtype(DType::F64)
        .try_into_vec::<f64>()
        .unwrap()
}

pub fn vec_f32(ckpt: &Checkpoint, key: &str) -> Vec<f32> {
    ckpt.read(key)
        .unwrap()
        .convert_dtype(DType::F32)
        .try_into_vec::<f32>()
        .unwrap()
}

pub fn vec_u8(ckpt: &Checkpoint, key: &str) -> Vec<u8> {
    ckpt.read(key).unwrap().try_into_vec::<u8>().unwrap()
}

/// An `[H, W, 3]` u8 fixture tensor as an image (channels as stored).
pub fn image(ckpt: &Checkpoint, key: &str) -> RgbImage {
    let shape = ckpt.shape(key).unwrap().to_vec();
    RgbImage::from_raw(shape[1] as u32, shape[0] as u32, vec_u8(ckpt, key)).unwrap()
}

/// Swaps the first and last channel (BGR ↔ RGB).
pub fn swap_rb(mut image: RgbImage) -> RgbImage {
    for p in image.pixels_mut() {
        p.0.swap(0, 2);
    }
    image
}

pub fn landmarks(ckpt: &Checkpoint, key: &str) -> Landmarks {
    let l = vec_f32(ckpt, key);
    Landmarks::new(std::array::from_fn(|i| [l[2 * i], l[2 * i + 1]])).unwrap()
}

/// Relative L2 error and max abs error of `a` against `b`, in f64.
pub fn rel_l2(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den, mut max) = (0.0, 0.0, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += (x - y) * (x - y);
        den += y * y;
        max = max.max((x - y).abs());
    }
    ((num / den).sqrt(), max)
}

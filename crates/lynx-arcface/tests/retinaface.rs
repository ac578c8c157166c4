//! RetinaFace (mobilenet0.25) against facexlib (`components/retinaface*`): raw heads,
//! priors, and the thresholded, NMS'd detections.

mod common;

use burn::tensor::{DType, Tensor, TensorData};
use common::{image, swap_rb, vec_f32};
use lynx_arcface::retinaface::{self, DetectOptions};
use lynx_arcface::{RetinaFace, load_retinaface};
use lynx_core::testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn detector() -> RetinaFace {
    let path = fixtures_dir().join("components/retinaface_mobile0.25.pth");
    load_retinaface(path, &test_device()).unwrap_or_else(|e| panic!("{e}"))
}

fn settings() -> DetectOptions {
    let text = std::fs::read_to_string(fixtures_dir().join("components/retinaface.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    DetectOptions {
        conf_threshold: v["conf_threshold"].as_f64().unwrap() as f32,
        nms_threshold: v["nms_threshold"].as_f64().unwrap() as f32,
        max_side: None,
    }
}

#[test]
fn parity_raw_heads_and_priors() {
    let device = test_device();
    let fx = fixture("components/retinaface.safetensors");
    let photo = swap_rb(image(&fx, "image_bgr"));
    let heads = detector().forward(retinaface::bgr_minus_mean(&photo, &device));
    for (name, got) in [
        ("loc", heads.loc),
        ("conf", heads.conf),
        ("landmarks", heads.landmarks),
    ] {
        let want: Tensor<3> = fixture_tensor(&fx, name, &device);
        assert_close(name, &got, &want, 1e-4);
    }
    let (h, w) = (photo.height() as usize, photo.width() as usize);
    let priors: Vec<f32> = retinaface::boxes::priors(h, w)
        .into_iter()
        .flatten()
        .collect();
    let n = priors.len() / 4;
    let priors = Tensor::<2>::from_data(TensorData::new(priors, [n, 4]), (&device, DType::F32));
    let want: Tensor<2> = fixture_tensor(&fx, "priors", &device);
    assert_close("priors", &priors, &want, 1e-4);
}

#[test]
fn parity_detections_match_as_a_set() {
    let fx = fixture("components/retinaface.safetensors");
    let photo = swap_rb(image(&fx, "image_bgr"));
    let found = detector().detect(&photo, &settings()).unwrap();
    let want = vec_f32(&fx, "detections");
    let want: Vec<&[f32]> = want.chunks(15).collect();
    eprintln!("{} detections, reference {}", found.len(), want.len());
    assert_eq!(found.len(), want.len());
    let mut unmatched: Vec<[f32; 15]> = found.iter().map(|d| d.to_row()).collect();
    let mut worst = (0f32, 0f32, 0f32);
    for row in &want {
        let dist = |r: &[f32; 15]| (0..4).map(|i| (r[i] - row[i]).abs()).fold(0f32, f32::max);
        let (i, d) = unmatched
            .iter()
            .enumerate()
            .map(|(i, r)| (i, dist(r)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        let r = unmatched.remove(i);
        let score = (r[4] - row[4]).abs();
        let lm = (5..15).map(|k| (r[k] - row[k]).abs()).fold(0f32, f32::max);
        worst = (worst.0.max(d), worst.1.max(score), worst.2.max(lm));
        assert!(
            d <= 1e-2,
            "reference box {row:?}: closest found {r:?} is {d} px away"
        );
        assert!(
            score <= 1e-4 && lm <= 1e-2,
            "reference {row:?}, found {r:?}"
        );
    }
    eprintln!(
        "detections: max box error {:.2e} px, score {:.2e}, landmarks {:.2e} px (tolerance 1e-2 px)",
        worst.0, worst.1, worst.2
    );
}

#[test]
fn parity_largest_face_or_a_clear_error() {
    let fx = fixture("components/retinaface.safetensors");
    let photo = swap_rb(image(&fx, "image_bgr"));
    let net = detector();
    let all = net.detect(&photo, &settings()).unwrap();
    let largest = net.largest_face(&photo, &settings()).unwrap();
    assert!(all.iter().all(|d| d.area() <= largest.area()));
    // Random weights score every prior near 0.5: at facexlib's default 0.8 nothing is a face.
    let err = net
        .largest_face(&photo, &DetectOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no face found"), "{err}");
}

#[test]
fn parity_downscaled_detection_maps_back_to_photo_pixels() {
    // A photo scaled up ×2 and detected with max_side at the original size gives the
    // original detections ×2 (nearest-neighbour upscaling is undone exactly by the
    // triangle filter's 2:1 average).
    let fx = fixture("components/retinaface.safetensors");
    let photo = swap_rb(image(&fx, "image_bgr"));
    let big = image::imageops::resize(
        &photo,
        photo.width() * 2,
        photo.height() * 2,
        image::imageops::FilterType::Nearest,
    );
    let net = detector();
    let opts = DetectOptions {
        max_side: Some(photo.width()),
        ..settings()
    };
    let small = net.detect(&photo, &settings()).unwrap();
    let scaled = net.detect(&big, &opts).unwrap();
    assert_eq!(small.len(), scaled.len());
    for (a, b) in small.iter().zip(&scaled) {
        for k in 0..4 {
            assert!((a.bbox[k] * 2.0 - b.bbox[k]).abs() < 1e-2, "{a:?} vs {b:?}");
        }
    }
}

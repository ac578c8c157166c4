//! RetinaFace (mobilenet0.25) against facexlib (`components/retinaface*`): raw heads,
//! priors, and the thresholded, NMS'd detections.

mod common;

use burn::tensor::{DType, Tensor, TensorData};
use common::{image, swap_rb, vec_f32};
use lynx_arcface::retinaface::{self, DetectOptions};
use lynx_arcface::{RetinaFace, load_retinaface};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

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

/// Score agreement the detections are held to (as for the raw heads).
const SCORE_TOL: f32 = 1e-4;

/// Matches `found` against the reference rows `want` as sets. Scores agree only to
/// [`SCORE_TOL`], so a candidate scoring within it of the threshold may be kept on one
/// backend and dropped on another: such rows, on either side, may go unmatched (a kept
/// one cannot suppress anything above the band, since NMS only drops lower scores).
/// Every other row is matched one to one: box corners within 1e-2 px, score within
/// [`SCORE_TOL`], landmarks within 1e-2 px. Returns the rows compared.
fn match_as_sets(found: &[[f32; 15]], want: &[&[f32]], threshold: f32) -> usize {
    let in_band = |score: f32| score <= threshold + SCORE_TOL;
    let mut unmatched: Vec<[f32; 15]> = found.to_vec();
    let (mut compared, mut worst) = (0, (0f32, 0f32, 0f32));
    for row in want {
        let dist = |r: &[f32; 15]| (0..4).map(|i| (r[i] - row[i]).abs()).fold(0f32, f32::max);
        let best = unmatched
            .iter()
            .enumerate()
            .map(|(i, r)| (i, dist(r)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|&(_, d)| d <= 1e-2);
        let Some((i, d)) = best else {
            assert!(
                in_band(row[4]),
                "reference detection {row:?} was not found (and its score is not within \
                 {SCORE_TOL} of the threshold {threshold})"
            );
            eprintln!(
                "near-threshold reference detection (score {}) not found: allowed",
                row[4]
            );
            continue;
        };
        let r = unmatched.remove(i);
        let score = (r[4] - row[4]).abs();
        let lm = (5..15).map(|k| (r[k] - row[k]).abs()).fold(0f32, f32::max);
        worst = (worst.0.max(d), worst.1.max(score), worst.2.max(lm));
        assert!(
            score <= SCORE_TOL && lm <= 1e-2,
            "reference {row:?}, found {r:?}"
        );
        compared += 1;
    }
    for r in &unmatched {
        assert!(
            in_band(r[4]),
            "found {r:?}, which the reference does not have (score {} is not within \
             {SCORE_TOL} of the threshold {threshold})",
            r[4]
        );
        eprintln!(
            "near-threshold detection (score {}) absent from the reference: allowed",
            r[4]
        );
    }
    eprintln!(
        "detections: {compared} compared, max box error {:.2e} px, score {:.2e}, landmarks \
         {:.2e} px (tolerance 1e-2 px, score {SCORE_TOL})",
        worst.0, worst.1, worst.2
    );
    compared
}

fn check_detections(net: &RetinaFace) {
    let fx = fixture("components/retinaface.safetensors");
    let photo = swap_rb(image(&fx, "image_bgr"));
    let opts = settings();
    let found: Vec<[f32; 15]> = net
        .detect(&photo, &opts)
        .unwrap()
        .iter()
        .map(|d| d.to_row())
        .collect();
    let want = vec_f32(&fx, "detections");
    let want: Vec<&[f32]> = want.chunks(15).collect();
    eprintln!("{} detections, reference {}", found.len(), want.len());
    let clear = want
        .iter()
        .filter(|r| r[4] > opts.conf_threshold + SCORE_TOL)
        .count();
    assert!(
        clear >= 5,
        "the fixture has {clear} detections clear of the threshold"
    );
    assert!(match_as_sets(&found, &want, opts.conf_threshold) >= clear);
}

#[test]
fn parity_detections_match_as_a_set() {
    check_detections(&detector());
}

/// The same weights saved by PyTorch < 1.6 (legacy format) under DataParallel's
/// `module.` prefix give the same heads and detections as the zip file.
#[test]
fn parity_legacy_module_pth_matches() {
    let path = fixtures_dir().join("components/retinaface_mobile0.25_legacy_module.pth");
    let net = load_retinaface(path, &test_device()).unwrap_or_else(|e| panic!("{e}"));
    let device = test_device();
    let fx = fixture("components/retinaface.safetensors");
    let photo = swap_rb(image(&fx, "image_bgr"));
    let heads = net.forward(retinaface::bgr_minus_mean(&photo, &device));
    for (name, got) in [
        ("loc", heads.loc),
        ("conf", heads.conf),
        ("landmarks", heads.landmarks),
    ] {
        let want: Tensor<3> = fixture_tensor(&fx, name, &device);
        assert_close(&format!("{name} (legacy, module.)"), &got, &want, 1e-4);
    }
    check_detections(&net);
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

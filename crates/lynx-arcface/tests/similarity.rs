//! The identity-similarity helpers: cosine on the host and on the device, and the
//! per-frame metric (detect → align → embed → cosine).

mod common;

use burn::tensor::{DType, Tensor, TensorData};
use common::{image, swap_rb};
use lynx_arcface::retinaface::DetectOptions;
use lynx_arcface::similarity::frame_similarities;
use lynx_arcface::{
    FaceAnalyzer, cosine_similarity, cosine_similarity_rows, load_arcface, load_retinaface,
};
use lynx_testing::{fixture, fixtures_dir, test_device};

#[test]
fn cosine_on_host_and_device() {
    assert!((cosine_similarity(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap() - 1.0).abs() < 1e-6);
    assert!(cosine_similarity(&[1.0, 0.0], &[0.0, 5.0]).unwrap().abs() < 1e-6);
    assert!((cosine_similarity(&[1.0, 1.0], &[-1.0, -1.0]).unwrap() + 1.0).abs() < 1e-6);
    assert!(
        cosine_similarity(&[1.0, 2.0], &[1.0])
            .unwrap_err()
            .to_string()
            .contains("sizes 2 and 1")
    );
    assert!(
        cosine_similarity(&[0.0, 0.0], &[1.0, 1.0])
            .unwrap_err()
            .to_string()
            .contains("all-zero")
    );

    let device = test_device();
    let t = |v: Vec<f32>, r: usize| {
        let c = v.len() / r;
        Tensor::<2>::from_data(TensorData::new(v, [r, c]), (&device, DType::F32))
    };
    let sims = cosine_similarity_rows(
        t(vec![3.0, 4.0], 1),
        t(vec![3.0, 4.0, -4.0, 3.0, -6.0, -8.0], 3),
    );
    let sims = sims
        .into_data()
        .convert_dtype(DType::F32)
        .try_into_vec::<f32>()
        .unwrap();
    for (got, want) in sims.iter().zip([1.0, 0.0, -1.0]) {
        assert!((got - want).abs() < 1e-6, "{sims:?}");
    }
}

#[test]
fn frame_similarity_of_the_reference_photo_is_one() {
    let device = test_device();
    let arcface = load_arcface(
        fixtures_dir().join("components/arcface_ir_se.safetensors"),
        &device,
        Some(&[1, 2, 1, 1]),
    )
    .unwrap();
    let detector = load_retinaface(
        fixtures_dir().join("components/retinaface_mobile0.25.pth"),
        &device,
    )
    .unwrap();
    let mut analyzer = FaceAnalyzer::new(arcface, Some(detector));
    // The fixture detector has random weights: faces score just above 0.5.
    analyzer.options.conf_threshold = 0.5;
    let photo = swap_rb(image(
        &fixture("components/retinaface.safetensors"),
        "image_bgr",
    ));
    let reference = analyzer.prepare(&photo, None).unwrap();
    assert_eq!(reference.aligned_112.dimensions(), (112, 112));
    assert_eq!(reference.aligned_256_extended.dimensions(), (256, 256));
    let norm: f32 = reference
        .embedding
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-5);

    let strict = DetectOptions::default();
    let sims = frame_similarities(
        &analyzer,
        &reference.embedding,
        std::slice::from_ref(&photo),
        &analyzer.options,
    )
    .unwrap();
    assert!((sims[0].unwrap() - 1.0).abs() < 1e-5, "{sims:?}");
    // No face at facexlib's default threshold: no score for the frame.
    let sims = frame_similarities(&analyzer, &reference.embedding, &[photo], &strict).unwrap();
    assert_eq!(sims, vec![None]);
}

#[test]
fn detection_needs_a_detector() {
    let arcface = load_arcface(
        fixtures_dir().join("components/arcface_ir_se.safetensors"),
        &test_device(),
        Some(&[1, 2, 1, 1]),
    )
    .unwrap();
    let analyzer = FaceAnalyzer::new(arcface, None);
    let err = analyzer
        .prepare(&image::RgbImage::new(64, 64), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no face detector"), "{err}");
}

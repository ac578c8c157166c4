//! Alignment against the reference (`components/align.safetensors`): Lynx's
//! `estimate_norm` (skimage Umeyama) matrices and `cv2.warpAffine` crops.

mod common;

use common::{image, landmarks, rel_l2, vec_f64, vec_u8};
use lynx_arcface::align::{Affine, arcface_template, estimate_similarity, warp_affine};
use lynx_arcface::{align_face, alignment_matrix, load_rgb};
use lynx_testing::{fixture, fixtures_dir};

#[test]
fn png_input_is_the_reference_image() {
    let fx = fixture("components/align.safetensors");
    let img = load_rgb(fixtures_dir().join("components/face_input.png")).unwrap();
    assert_eq!(img, image(&fx, "image"));
}

#[test]
fn parity_matrices_match_skimage() {
    let fx = fixture("components/align.safetensors");
    let lm = landmarks(&fx, "landmarks");
    for (size, extended, key) in [(112, false, "M_112"), (256, true, "M_256_extended")] {
        let m = alignment_matrix(&lm, size, extended).unwrap();
        let got: Vec<f64> = m.0.iter().flatten().copied().collect();
        let (rel, max) = rel_l2(&got, &vec_f64(&fx, key));
        eprintln!("{key}: rel_l2 = {rel:.3e}, max_abs = {max:.3e} (tolerance 1e-5)");
        assert!(rel <= 1e-5, "{key}: relative L2 error {rel:.3e}");
    }
}

#[test]
fn parity_crops_match_opencv() {
    let fx = fixture("components/align.safetensors");
    let img = image(&fx, "image");
    let lm = landmarks(&fx, "landmarks");
    for (size, extended, key) in [
        (112, false, "aligned_112"),
        (256, true, "aligned_256_extended"),
    ] {
        let crop = align_face(&img, &lm, size, extended).unwrap();
        assert_eq!(crop.dimensions(), (size, size));
        let want = vec_u8(&fx, key);
        let diffs: Vec<u8> = crop
            .as_raw()
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let within = diffs.iter().filter(|d| **d <= 2).count() as f64 / diffs.len() as f64;
        let exact = diffs.iter().filter(|d| **d == 0).count() as f64 / diffs.len() as f64;
        let max = diffs.iter().max().unwrap();
        eprintln!(
            "{key}: {:.3}% of values within 2 levels, {:.3}% exact, max diff {max}",
            within * 100.0,
            exact * 100.0
        );
        assert!(
            within >= 0.99,
            "{key}: only {:.3}% within 2 levels",
            within * 100.0
        );
        // The same landmarks on both sides: only rounding near pixel edges differs.
        assert!(*max <= 2, "{key}: a value differs by {max}");
    }
}

#[test]
fn parity_warp_with_reference_matrix_is_nearly_exact() {
    // Separates the warp from the matrix estimate: the reference's own M.
    let fx = fixture("components/align.safetensors");
    let img = image(&fx, "image");
    let m = vec_f64(&fx, "M_112");
    let m = Affine([[m[0], m[1], m[2]], [m[3], m[4], m[5]]]);
    let crop = warp_affine(&img, &m, 112, 112).unwrap();
    let want = vec_u8(&fx, "aligned_112");
    let off: Vec<u8> = crop
        .as_raw()
        .iter()
        .zip(&want)
        .map(|(a, b)| a.abs_diff(*b))
        .filter(|d| *d > 0)
        .collect();
    eprintln!(
        "aligned_112 from the reference M: {} of {} values differ, by at most {:?}",
        off.len(),
        want.len(),
        off.iter().max()
    );
    assert!(
        off.len() * 1000 <= want.len(),
        "{} values differ",
        off.len()
    );
    assert!(off.iter().all(|d| *d <= 1));
}

#[test]
fn template_maps_onto_itself() {
    let t = arcface_template(112, false).map(|[x, y]| [f64::from(x), f64::from(y)]);
    let m = estimate_similarity(&t, &t).unwrap();
    let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
    for (r, e) in m.0.iter().zip(id) {
        for (a, b) in r.iter().zip(e) {
            assert!((a - b).abs() < 1e-12, "{m:?}");
        }
    }
    // A rotated, scaled and shifted copy is recovered exactly.
    let (c, s, k) = (0.3f64.cos(), 0.3f64.sin(), 1.7);
    let moved = t.map(|[x, y]| [k * (c * x - s * y) + 5.0, k * (s * x + c * y) - 3.0]);
    let m = estimate_similarity(&t, &moved).unwrap();
    for (p, q) in t.iter().zip(&moved) {
        let r = m.apply(*p);
        assert!((r[0] - q[0]).abs() < 1e-9 && (r[1] - q[1]).abs() < 1e-9);
    }
}

#[test]
fn degenerate_landmarks_are_an_error() {
    let lm = lynx_arcface::Landmarks::new([[10.0, 10.0]; 5]).unwrap();
    let err = alignment_matrix(&lm, 112, false).unwrap_err().to_string();
    assert!(err.contains("degenerate"), "{err}");
    let ok = lynx_arcface::Landmarks::new(arcface_template(112, false)).unwrap();
    let err = alignment_matrix(&ok, 100, false).unwrap_err().to_string();
    assert!(err.contains("multiple of 112 or 128"), "{err}");
}

//! Bad input gives errors that say what is wrong, never panics.

use std::path::PathBuf;

use lynx_arcface::{Landmarks, load_arcface, load_retinaface, load_rgb};
use lynx_core::Error;
use lynx_testing::{fixtures_dir, test_device};

fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-arcface-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn corrupt_images() {
    let png = std::fs::read(fixtures_dir().join("components/face_input.png")).unwrap();
    let truncated = tmp("truncated.png", &png[..png.len() / 2]);
    let err = load_rgb(&truncated).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated.png"), "{err}");

    let garbage = tmp("garbage.jpg", b"definitely not a JPEG file");
    let err = load_rgb(&garbage).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.jpg"), "{err}");

    let mut bad_jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bad_jpeg.extend_from_slice(&[0u8; 64]);
    let err = load_rgb(tmp("bad.jpg", &bad_jpeg)).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");

    let err = load_rgb(fixtures_dir().join("components/nope.png")).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
}

#[test]
fn landmark_files_with_the_wrong_shape() {
    let cases: [(&str, &str); 7] = [
        ("[[1,2],[3,4],[5,6],[7,8]]", "found 4 entries"),
        (
            "[[1,2],[3,4],[5,6],[7,8],[9,10],[11,12]]",
            "found 6 entries",
        ),
        ("[[1,2],[3,4],[5,6],[7,8],[9]]", "point 4 has 1 coordinates"),
        (
            "[[1,2],[3,4],[5,6],[7,8],[9,\"x\"]]",
            "point 4 coordinate 1 is a string",
        ),
        ("{\"kps\": [[1,2]]}", "found an object"),
        ("[1,2,3,4,5]", "point 0 is a number"),
        ("[[1,2],[3,4]", "expected an array of five"),
    ];
    for (i, (text, message)) in cases.iter().enumerate() {
        let path = tmp(&format!("landmarks{i}.json"), text.as_bytes());
        let err = Landmarks::from_json_file(&path).unwrap_err();
        let s = err.to_string();
        assert!(matches!(err, Error::Format { .. }), "{err:?}");
        assert!(
            s.contains(message) && s.contains(&format!("landmarks{i}.json")),
            "{text}: {s}"
        );
    }
    let err = Landmarks::from_json_file(fixtures_dir().join("nope.json")).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    let good = Landmarks::from_json_str("[[1,2],[3,4],[5,6],[7,8],[9,10.5]]").unwrap();
    assert_eq!(good.0[4], [9.0, 10.5]);
    assert_eq!(Landmarks::from_json_str(&good.to_json()).unwrap(), good);
}

#[test]
fn checkpoints_of_the_wrong_model() {
    let device = test_device();
    let retina = fixtures_dir().join("components/retinaface_mobile0.25.pth");
    let arc = fixtures_dir().join("components/arcface_ir_se.safetensors");
    let err = load_arcface(&retina, &device, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("body.0.res_layer.1.weight") && err.contains("retinaface_mobile0.25.pth"),
        "{err}"
    );
    let err = load_retinaface(&arc, &device).unwrap_err().to_string();
    assert!(
        err.contains("not a facexlib RetinaFace") && err.contains("arcface_ir_se.safetensors"),
        "{err}"
    );
}

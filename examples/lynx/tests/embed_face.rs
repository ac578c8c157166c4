//! `lynx embed-face`: parity of the written embedding with facexlib's ArcFace, the photo
//! paths (landmarks file, detector), and its errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{DType, Tensor, TensorData};
use lynx_pipeline::lynx_arcface::{self, Landmarks, image::RgbImage};
use lynx_store::Checkpoint;
use lynx_testing::{assert_close, fixture, fixtures_dir, test_device};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-embed-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lynx<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `lynx` with `args`, which must succeed.
fn lynx_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    let out = lynx(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn components(name: &str) -> String {
    fixtures_dir()
        .join("components")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn device_arg() -> String {
    match std::env::var("LYNX_TEST_DEVICE").as_deref() {
        Ok("wgpu") => "wgpu".into(),
        _ => "cpu".into(),
    }
}

/// The `embedding` written by the CLI, as `[1, D]`.
fn written(path: &Path) -> Tensor<2> {
    let ckpt = Checkpoint::open(path).unwrap();
    assert_eq!(ckpt.keys().collect::<Vec<_>>(), ["embedding"]);
    let data = ckpt.read("embedding").unwrap().convert_dtype(DType::F32);
    let n = data.num_elements();
    Tensor::from_data(
        TensorData::new(data.try_into_vec::<f32>().unwrap(), [1, n]),
        (&test_device(), DType::F32),
    )
}

fn u8_image(ckpt: &Checkpoint, key: &str) -> RgbImage {
    let shape = ckpt.shape(key).unwrap().to_vec();
    let data = ckpt.read(key).unwrap().try_into_vec::<u8>().unwrap();
    RgbImage::from_raw(shape[1] as u32, shape[0] as u32, data).unwrap()
}

/// `embed-face` with ArcFace `arcface` (a components file) on the reference's own 112
/// crop, whose embedding is the fixture's: the written embedding.
fn embed_reference_crop(dir: &Path, arcface: &str) -> Tensor<2> {
    let crop = u8_image(&fixture("components/align.safetensors"), "aligned_112");
    let png = dir.join("crop.png");
    lynx_arcface::save_png(&crop, &png).unwrap();
    let out_path = dir.join("emb.safetensors");
    lynx_ok(&[
        "embed-face",
        "--arcface",
        &components(arcface),
        "--arcface-depths",
        "1,2,1,1",
        "--aligned-face",
        png.to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
        "--device",
        &device_arg(),
    ]);
    written(&out_path)
}

/// The reference ArcFace embedding of the 112 crop, `[1, D]`.
fn reference_embedding() -> Tensor<2> {
    lynx_testing::fixture_tensor(
        &fixture("components/arcface.safetensors"),
        "embedding",
        &test_device(),
    )
}

#[test]
fn parity_embed_face_from_aligned_crop() {
    let got = embed_reference_crop(&tmp("aligned"), "arcface_ir_se.pth");
    assert_close("embed-face embedding", &got, &reference_embedding(), 1e-4);
}

#[test]
fn embed_face_from_photo_and_landmarks() {
    let dir = tmp("photo");
    let fx = fixture("components/align.safetensors");
    let l = fx.read("landmarks").unwrap().try_into_vec::<f32>().unwrap();
    let landmarks = Landmarks::new(std::array::from_fn(|i| [l[2 * i], l[2 * i + 1]])).unwrap();
    let json = dir.join("landmarks.json");
    std::fs::write(&json, landmarks.to_json()).unwrap();
    let out_path = dir.join("emb.safetensors");
    lynx_ok(&[
        "embed-face",
        "--arcface",
        &components("arcface_ir_se.safetensors"),
        "--arcface-depths",
        "1,2,1,1",
        "--face",
        &components("face_input.png"),
        "--landmarks",
        json.to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
    ]);
    // Same as the library on the same photo and points.
    let device = test_device();
    let model = lynx_arcface::load_arcface(
        components("arcface_ir_se.safetensors"),
        &device,
        Some(&[1, 2, 1, 1]),
    )
    .unwrap();
    let photo = lynx_arcface::load_rgb(components("face_input.png")).unwrap();
    let crop = lynx_arcface::align_face(&photo, &landmarks, 112, false).unwrap();
    let want = model.embed(&crop).unwrap();
    assert_close("embed-face from photo", &written(&out_path), &want, 1e-6);
}

#[test]
fn embed_face_errors_are_sentences() {
    let dir = tmp("errors");
    let out_path = dir.join("emb.safetensors");
    let out_s = out_path.to_str().unwrap();
    let bad_json = dir.join("bad.json");
    std::fs::write(&bad_json, "[[1, 2], [3, 4]]").unwrap();
    let corrupt = dir.join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let arc = components("arcface_ir_se.pth");
    let base = [
        "embed-face",
        "--arcface",
        arc.as_str(),
        "--arcface-depths",
        "1,2,1,1",
        "--output",
        out_s,
    ];
    let face = components("face_input.png");
    let retina = components("retinaface_mobile0.25.pth");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--face", &face, "--landmarks", bad_json.to_str().unwrap()],
            "found 2 entries",
        ),
        (
            vec!["--aligned-face", corrupt.to_str().unwrap()],
            "corrupt.png",
        ),
        // The fixture detector's random weights score nothing as high as 0.8.
        (
            vec!["--face", &face, "--detector", &retina],
            "no face found",
        ),
        (vec!["--face", &face], "--detector FILE or --landmarks JSON"),
        (vec![], "--face PHOTO or --aligned-face PNG"),
        (vec!["--aligned-face", &face], "112×112"),
    ];
    for (extra, want) in cases {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        let out = lynx(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{extra:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
    }
    // Without --arcface-depths the fixture's stage boundaries are ambiguous: say so.
    let out = lynx(&[
        "embed-face",
        "--arcface",
        &arc,
        "--aligned-face",
        &face,
        "--output",
        out_s,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("depths"), "{err}");
}

/// facexlib's released models may be in PyTorch's legacy format, the detector with
/// DataParallel's `module.` prefix: the same tensors give the same embedding.
#[test]
fn parity_embed_face_from_legacy_pth() {
    let dir = tmp("legacy");
    let got = embed_reference_crop(&dir, "arcface_ir_se_legacy.pth");
    assert_close(
        "embed-face (legacy .pth)",
        &got,
        &reference_embedding(),
        1e-4,
    );

    // Detection with the legacy `module.` detector and the legacy ArcFace gives what the
    // zip files give, from the photo of the RetinaFace fixture (its random weights
    // score faces just above 0.5).
    let run = |detector: &str, arcface: &str, name: &str| {
        let path = dir.join(name);
        lynx_ok(&[
            "embed-face",
            "--arcface",
            &components(arcface),
            "--arcface-depths",
            "1,2,1,1",
            "--face",
            &components("photo.png"),
            "--detector",
            &components(detector),
            "--detect-threshold",
            "0.5",
            "--detect-max-side",
            "0",
            "--output",
            path.to_str().unwrap(),
        ]);
        written(&path)
    };
    let zip = run(
        "retinaface_mobile0.25.pth",
        "arcface_ir_se.pth",
        "zip.safetensors",
    );
    let legacy = run(
        "retinaface_mobile0.25_legacy_module.pth",
        "arcface_ir_se_legacy.pth",
        "legacy.safetensors",
    );
    assert_eq!(
        zip.into_data().try_into_vec::<f32>().unwrap(),
        legacy.into_data().try_into_vec::<f32>().unwrap()
    );
}

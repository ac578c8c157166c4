//! Checkpoint and config loading: the real fixture layouts, and bad input.

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use lynx_core::Error;
use lynx_store::Checkpoint;
use lynx_testing::{fixtures_dir, test_device};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-core-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny_transformer() -> PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/transformer")
}

#[test]
fn opens_sharded_folder_through_its_index() {
    let ckpt = Checkpoint::open(tiny_transformer()).unwrap();
    assert!(
        ckpt.path()
            .to_str()
            .unwrap()
            .ends_with(".safetensors.index.json")
    );
    assert!(ckpt.len() > 20);
    let shape = ckpt.shape("patch_embedding.weight").unwrap().to_vec();
    assert_eq!(shape.len(), 5);
    let t = ckpt
        .tensor::<5>("patch_embedding.weight", &test_device(), DType::F32)
        .unwrap();
    assert_eq!(t.dims().to_vec(), shape);
}

#[test]
fn converts_to_half_precision() {
    let ckpt = Checkpoint::open(tiny_transformer()).unwrap();
    let device = test_device();
    let f = ckpt
        .tensor::<2>("proj_out.weight", &device, DType::F32)
        .unwrap();
    let h = ckpt
        .tensor::<2>("proj_out.weight", &device, DType::F16)
        .unwrap();
    assert_eq!(h.dtype(), DType::F16);
    let d = lynx_testing::diff(&h.cast(DType::F32), &f);
    assert!(d.rel_l2 < 1e-3, "{d:?}");
}

#[test]
fn opens_pytorch_archive() {
    let ckpt = Checkpoint::open(fixtures_dir().join("components/arcface_ir_se.pth")).unwrap();
    let st = Checkpoint::open(fixtures_dir().join("components/arcface_ir_se.safetensors")).unwrap();
    let device = test_device();
    let key = st
        .keys()
        .find(|k| k.ends_with("weight"))
        .unwrap()
        .to_string();
    let a = ckpt.read(&key).unwrap();
    let b = st.read(&key).unwrap();
    assert_eq!(a.shape(), b.shape());
    assert_eq!(a.as_bytes(), b.as_bytes());
    let _ = device;
}

#[test]
fn truncated_safetensors_names_file() {
    let dir = tmp("trunc");
    let src = fixtures_dir().join("components/resampler.safetensors");
    let bytes = std::fs::read(&src).unwrap();
    let path = dir.join("cut.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = Checkpoint::open(&path).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("cut.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn garbage_file_names_file() {
    let dir = tmp("garbage");
    let path = dir.join("model.safetensors");
    std::fs::write(&path, b"this is not a safetensors file at all").unwrap();
    let msg = Checkpoint::open(&path).unwrap_err().to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("not a valid safetensors"),
        "{msg}"
    );
}

#[test]
fn missing_file_is_reported() {
    let msg = Checkpoint::open("/nonexistent/model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/model.safetensors"), "{msg}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn index_pointing_at_missing_shard() {
    let dir = tmp("shard");
    copy_dir(&tiny_transformer(), &dir);
    let gone = dir.join("diffusion_pytorch_model-00004-of-00009.safetensors");
    std::fs::remove_file(&gone).unwrap();
    let err = Checkpoint::open(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    assert!(
        msg.contains("00004-of-00009") && msg.contains("index"),
        "{msg}"
    );
}

#[test]
fn loader_reports_missing_unused_and_mismatched_at_once() {
    let ckpt = Checkpoint::open(fixtures_dir().join("lynx_full/ref_layers.safetensors")).unwrap();
    let device = test_device();
    let shape = ckpt.shape("0.to_k_ref.weight").unwrap().to_vec();
    let err = ckpt
        .build(&device, DType::F32, |w| {
            let _ok = w
                .sub(0)
                .sub("to_k_ref")
                .tensor::<2>("weight", [shape[0], shape[1]]);
            let bad = w
                .sub(0)
                .sub("to_v_ref")
                .tensor::<2>("weight", [shape[0] + 1, shape[1]]);
            let missing = w.sub(0).tensor::<1>("not_there", [3]);
            // Failed reads still hand back the shape asked for (a zero placeholder).
            assert_eq!(bad.dims(), [shape[0] + 1, shape[1]]);
            assert_eq!(missing.dims(), [3]);
            Ok(())
        })
        .unwrap_err();
    let Error::Keys {
        missing,
        unexpected,
        mismatched,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(missing, &["0.not_there".to_string()]);
    assert_eq!(mismatched.len(), 1);
    assert_eq!(mismatched[0].0, "0.to_v_ref.weight");
    assert!(unexpected.contains(&"0.to_k_ref.bias".to_string()));
    let msg = err.to_string();
    assert!(
        msg.contains("ref_layers.safetensors") && msg.contains("0.not_there"),
        "{msg}"
    );
}

#[test]
fn synthetic_checkpoint_hands_out_requested_shapes() {
    let ckpt = Checkpoint::synthetic(0.02);
    let device = test_device();
    ckpt.build(&device, DType::F32, |w| {
        let t = w.sub("blocks").sub(0).tensor::<2>("weight", [4, 3]);
        assert_eq!(t.dims(), [4, 3]);
        assert!(!w.has("weight") && w.shape("weight").is_none());
        Ok(())
    })
    .unwrap();
    // A tensor whose shape only a file could give is reported, not invented.
    let result = ckpt.build(&device, DType::F32, |w| {
        let _ = w.tensor_any::<2>("from_file");
        Ok(())
    });
    assert!(result.is_err());
}

//! PyTorch archives that `zip` 9.4 misreads (ZIP64 end records before a complete classic
//! end record, with a 21-character archive name): they must open and read like any other.

use burn::tensor::DType;
use lynx_core::Checkpoint;
use lynx_core::testing::{fixtures_dir, test_device};

#[cfg(unix)]
fn temp_copies() -> Vec<String> {
    let prefix = format!("lynx-pth-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

#[test]
fn opens_torch_archive_named_with_21_characters() {
    let path = fixtures_dir().join("components/retinaface_mobile0.25.pth");
    let ckpt = Checkpoint::open(&path).unwrap_or_else(|e| panic!("{e}"));
    // facexlib's RetinaFace (mobilenet0.25) state dict.
    assert_eq!(
        ckpt.shape("body.stage1.0.0.weight"),
        Some(&[8, 3, 3, 3][..])
    );
    assert_eq!(
        ckpt.shape("ClassHead.2.conv1x1.weight"),
        Some(&[4, 64, 1, 1][..])
    );
    assert!(ckpt.keys().any(|k| k.ends_with("num_batches_tracked")));
    // Every storage reads back (pytorch-reader checks each entry's CRC-32).
    let device = test_device();
    for key in ckpt.keys() {
        let data = ckpt.read(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        let numel: usize = ckpt.shape(key).unwrap().iter().product();
        assert_eq!(data.num_elements(), numel, "{key}");
    }
    let w = ckpt
        .tensor::<4>("body.stage1.0.0.weight", &device, DType::F32)
        .unwrap();
    let values = w
        .to_data()
        .convert_dtype(DType::F32)
        .try_to_vec::<f32>()
        .unwrap();
    assert!(values.iter().all(|v| v.is_finite()) && values.iter().any(|v| *v != 0.0));
    // The repaired temporary copy is already unlinked.
    #[cfg(unix)]
    assert_eq!(temp_copies(), Vec::<String>::new());
}

//! Reading without holding: dtype conversion as tensors are copied, embedding rows,
//! sizing without reading, and layers streamed one at a time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::{DType, Tensor, bf16};
use lynx_core::Error;
use lynx_store::safetensors_io::{self, Dtype};
use lynx_store::{Checkpoint, LayerStream, Offload};
use lynx_testing::test_device;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-stream-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` values spread over several binades, exact in f32.
fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.37).collect()
}

/// A file with the same `[rows, cols]` values in f32 (`w32`) and bf16 (`w16`), and
/// a stack of `layers` layers `blocks.i.weight` `[4, 3]` (f32, value `i`).
fn write_file(name: &str, rows: usize, cols: usize, layers: usize) -> PathBuf {
    let v = values(rows * cols);
    let f32_bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let bf16_bytes: Vec<u8> = v
        .iter()
        .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
        .collect();
    let layer_bytes: Vec<Vec<u8>> = (0..layers)
        .map(|i| (0..12).flat_map(|_| (i as f32).to_le_bytes()).collect())
        .collect();
    let names: Vec<String> = (0..layers).map(|i| format!("blocks.{i}.weight")).collect();
    let shape = [rows, cols];
    let mut tensors: Vec<(&str, Dtype, &[usize], &[u8])> = vec![
        ("w32", Dtype::F32, &shape, &f32_bytes),
        ("w16", Dtype::BF16, &shape, &bf16_bytes),
    ];
    for (n, b) in names.iter().zip(&layer_bytes) {
        tensors.push((n, Dtype::F32, &[4, 3], b));
    }
    let path = tmp(name).join("model.safetensors");
    safetensors_io::save(&path, &tensors, None).unwrap();
    path
}

#[test]
fn reads_convert_in_one_pass_as_burn_does() {
    let path = write_file("convert", 37, 11, 0);
    let ckpt = Checkpoint::open(&path).unwrap();
    for key in ["w32", "w16"] {
        let file = ckpt.read(key).unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let ours = ckpt.read_as(key, dtype).unwrap();
            assert_eq!(ours.dtype(), dtype);
            let burns = file.clone().convert_dtype(dtype);
            assert_eq!(ours.as_bytes(), burns.as_bytes(), "{key} as {dtype:?}");
        }
    }
    let err = ckpt.read_as("w32", DType::I32).unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
}

#[test]
fn rows_are_read_alone() {
    let path = write_file("rows", 50, 8, 0);
    let ckpt = Checkpoint::open(&path).unwrap();
    let device = test_device();
    let rows = [3usize, 0, 49, 3];
    for key in ["w32", "w16"] {
        let table = ckpt.tensor::<2>(key, &device, DType::F32).unwrap();
        let ids = Tensor::<1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(rows.iter().map(|&r| r as i64).collect(), [4]),
            &device,
        );
        let want = table.select(0, ids);
        let got = Tensor::<2>::from_data(
            ckpt.read_rows(key, &rows, DType::F32).unwrap(),
            (&device, DType::F32),
        );
        assert_eq!(got.to_data().as_bytes(), want.to_data().as_bytes(), "{key}");
    }
    let err = ckpt
        .read_rows("w32", &[50], DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 50") && err.contains("50 rows"), "{err}");
}

#[test]
fn measure_counts_bytes_without_reading_and_checks_keys() {
    let path = write_file("measure", 6, 5, 3);
    let ckpt = Checkpoint::open(&path).unwrap();
    let device = test_device();
    let load = |w: &lynx_store::Loader| {
        let a = w.tensor::<2>("w32", [6, 5]);
        let b = w.tensor_f32::<2>("w16", [6, 5]);
        for i in 0..3 {
            let _ = w.sub("blocks").sub(i).tensor::<2>("weight", [4, 3]);
        }
        Ok((a, b))
    };
    // bf16: w32 and the blocks in bf16, w16 kept in f32.
    let bytes = ckpt.measure(&device, DType::BF16, load).unwrap();
    assert_eq!(bytes, 30 * 2 + 30 * 4 + 3 * 12 * 2);
    let block = ckpt
        .measure_at("blocks.1", &device, DType::F32, |w| {
            Ok(w.tensor::<2>("weight", [4, 3]))
        })
        .unwrap();
    assert_eq!(block, 48);
    // A wrong shape is reported as loading would.
    let err = ckpt
        .measure(&device, DType::F32, |w| Ok(w.tensor::<2>("w32", [5, 6])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("w32") && err.contains("[5, 6]"), "{err}");
    // build_at checks only its own prefix's keys.
    let t = ckpt
        .build_at("blocks.2", &device, DType::F32, |w| {
            Ok(w.tensor::<2>("weight", [4, 3]))
        })
        .unwrap();
    assert_eq!(t.into_data().try_to_vec::<f32>().unwrap(), vec![2.0; 12]);
}

#[test]
fn layer_stream_reads_each_layer_in_turn() {
    let path = write_file("layers", 2, 2, 5);
    let ckpt = Arc::new(Checkpoint::open(&path).unwrap());
    let device = test_device();
    let loads = Arc::new(AtomicUsize::new(0));
    let counter = loads.clone();
    let prefixes = (0..5).map(|i| format!("blocks.{i}")).collect();
    let stream = LayerStream::new(ckpt, prefixes, &device, DType::F32, move |w| {
        counter.fetch_add(1, Ordering::SeqCst);
        w.tensor::<2>("weight", [4, 3])
    });
    for prefetch in [true, false] {
        let stream = stream.clone().with_prefetch(prefetch);
        let mut seen = Vec::new();
        stream
            .for_each(|i, t| {
                let v = t.clone().into_data().try_to_vec::<f32>().unwrap();
                seen.push((i, v[0]));
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, (0..5).map(|i| (i, i as f32)).collect::<Vec<_>>());
    }
    assert_eq!(loads.load(Ordering::SeqCst), 10);
    // An error of the caller stops the walk and comes back.
    let err = stream
        .for_each(|i, _| {
            if i == 2 {
                Err(Error::input("stop"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert!(err.to_string().contains("stop"));
    assert!(stream.load(5).is_err());
}

#[test]
fn offload_names() {
    for o in [Offload::None, Offload::Model, Offload::Blocks] {
        assert_eq!(Offload::parse(o.name()).unwrap(), o);
    }
    assert!(
        Offload::parse("disk")
            .unwrap_err()
            .to_string()
            .contains("none, model or blocks")
    );
}

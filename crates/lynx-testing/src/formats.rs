//! The weight files of `tests/fixtures/formats` made plain: every tensor in f32 under
//! the name and layout the file stores it in, the quantized ones taken from the
//! generator's `formats/dequantized.safetensors` (not from lynx-rs's decoders), so a run
//! from the written file is the reference a run from the quantized file must equal.

use std::path::Path;

use burn::tensor::{DType, TensorData};
use safetensors::{Dtype, SafeTensors};

/// Writes `formats/<file>` to `out` in f32: fp8 tensors (times their `scale_weight` for
/// ComfyUI's scaled fp8) from `dequantized.safetensors` (`<stem>/<name>`), bf16/f16/f32
/// tensors cast; the `scaled_fp8` marker, the `*.scale_weight`/`*.scale_input` tensors
/// and an embedded `spiece_model` are left out. Returns how many tensors came from
/// `dequantized.safetensors`.
///
/// # Panics
/// On anything unexpected (tests only): a missing reference, an unknown dtype.
pub fn write_dequantized(file: &str, out: &Path) -> usize {
    let dir = crate::fixtures_dir().join("formats");
    let src = std::fs::read(dir.join(file)).unwrap();
    let src = SafeTensors::deserialize(&src).unwrap();
    let deq = std::fs::read(dir.join("dequantized.safetensors")).unwrap();
    let deq = SafeTensors::deserialize(&deq).unwrap();
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let skipped = |name: &str| {
        name == "scaled_fp8"
            || name == "spiece_model"
            || name.ends_with(".scale_weight")
            || name.ends_with(".scale_input")
    };
    let mut from_reference = 0;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in src.tensors() {
        if skipped(&name) {
            continue;
        }
        let bytes = match view.dtype() {
            Dtype::F8_E4M3 | Dtype::F8_E5M2 => {
                let r = deq
                    .tensor(&format!("{stem}/{name}"))
                    .unwrap_or_else(|e| panic!("{stem}/{name}: {e}"));
                assert_eq!(r.dtype(), Dtype::F32, "{stem}/{name}");
                assert_eq!(r.shape(), view.shape(), "{stem}/{name}");
                from_reference += 1;
                r.data().to_vec()
            }
            dtype => {
                let dtype = match dtype {
                    Dtype::F32 => DType::F32,
                    Dtype::F16 => DType::F16,
                    Dtype::BF16 => DType::BF16,
                    other => panic!("{file}: `{name}` is {other:?}"),
                };
                let data = TensorData::from_bytes_vec(view.data().to_vec(), view.shape(), dtype);
                data.convert_dtype(DType::F32).as_bytes().to_vec()
            }
        };
        tensors.push((name, view.shape().to_vec(), bytes));
    }
    save_f32(&tensors, out);
    from_reference
}

/// Writes the GGUF DiT `formats/<file>` to `out` as an f32 safetensors file in bare
/// native Wan names (those of `wan_native_fp8_e4m3fn.safetensors`, the same DiT): the
/// tensors `components/formats.json` lists as quantized from `dequantized.safetensors`,
/// the F32/F16 ones read and cast. Returns how many came from `dequantized.safetensors`.
///
/// # Panics
/// On anything unexpected (tests only).
pub fn write_dequantized_gguf(file: &str, out: &Path) -> usize {
    let dir = crate::fixtures_dir();
    let json = std::fs::read_to_string(dir.join("components/formats.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let types = &json["files"][file]["tensor_type_by_name"];
    let names = std::fs::read(dir.join("formats/wan_native_fp8_e4m3fn.safetensors")).unwrap();
    let names: Vec<String> = SafeTensors::deserialize(&names)
        .unwrap()
        .names()
        .into_iter()
        .map(|n| n.to_string())
        .collect();
    let deq = std::fs::read(dir.join("formats/dequantized.safetensors")).unwrap();
    let deq = SafeTensors::deserialize(&deq).unwrap();
    let gguf = lynx_store::Checkpoint::open(dir.join("formats").join(file)).unwrap();
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let mut from_reference = 0;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in names {
        let kind = types[&*name].as_str().unwrap_or_else(|| panic!("{name}"));
        let (shape, bytes) = if matches!(kind, "F32" | "F16" | "BF16") {
            let key = lynx_store::formats::layout::rename(gguf.layout(), &name).unwrap();
            let data = gguf.read_as(&key, DType::F32).unwrap();
            (data.shape().to_vec(), data.as_bytes().to_vec())
        } else {
            let r = deq
                .tensor(&format!("{stem}/{name}"))
                .unwrap_or_else(|e| panic!("{stem}/{name}: {e}"));
            from_reference += 1;
            (r.shape().to_vec(), r.data().to_vec())
        };
        tensors.push((name.to_string(), shape, bytes));
    }
    save_f32(&tensors, out);
    from_reference
}

/// Writes `(name, shape, f32 bytes)` tensors to `out`.
fn save_f32(tensors: &[(String, Vec<usize>, Vec<u8>)], out: &Path) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes);
            (name.as_str(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, out).unwrap();
}

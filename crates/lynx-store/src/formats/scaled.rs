//! ComfyUI's scaled fp8 safetensors: the per-layer scales folded into their weights.
//!
//! Legacy layout (`comfy/ops.py` `scaled_fp8_ops`): a `scaled_fp8` marker tensor at the
//! model's prefix; for each quantized Linear `<layer>.weight` in fp8 and
//! `<layer>.scale_weight`, an f32 scalar, the value being `float(weight) ×
//! scale_weight`; an optional `<layer>.scale_input` used only by fp8 matmuls. Current
//! ComfyUI names them `.weight_scale` and `.input_scale`, with a `.comfy_quant` uint8
//! tensor holding `{"format": "float8_e4m3fn"}`, or the same per layer in the header's
//! `_quantization_metadata` (`{"layers": {"<layer>": {"format": …}}}`, which
//! `comfy/utils.py` `convert_old_quants` turns into those tensors). The math is the same.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::DType;
use lynx_core::quant::Encoding;
use lynx_core::{Error, Result};
use memmap2::Mmap;

use crate::entry::Entry;

const WEIGHT_SCALES: [&str; 2] = [".scale_weight", ".weight_scale"];
const INPUT_SCALES: [&str; 2] = [".scale_input", ".input_scale"];
const QUANT_INFO: &str = ".comfy_quant";
const MARKER: &str = "scaled_fp8";
/// The sentencepiece model ComfyUI's UMT5 files carry for the tokenizer.
pub(crate) const SPIECE: &str = super::SPIECE_MODEL;

/// Whether `key` is one of the tensors [`fold`] consumes.
pub(crate) fn is_consumed(key: &str) -> bool {
    WEIGHT_SCALES
        .iter()
        .chain(&INPUT_SCALES)
        .chain(&[QUANT_INFO])
        .any(|s| key.ends_with(s))
        || key == MARKER
        || key.ends_with(&format!(".{MARKER}"))
        || key == SPIECE
}

fn bytes<'m>(mmap: &'m Mmap, e: &Entry, path: &Path, key: &str) -> Result<&'m [u8]> {
    let (a, b) = e.range;
    mmap.get(a..b).ok_or_else(|| {
        Error::format(
            path,
            "safetensors",
            format!("tensor `{key}` lies outside the file"),
        )
    })
}

/// The single value of the scale tensor `key`.
fn scalar(mmap: &Mmap, e: &Entry, path: &Path, key: &str) -> Result<f32> {
    let numel: usize = e.shape.iter().product();
    let raw = bytes(mmap, e, path, key)?;
    let bad = |why: &str| {
        Error::format(
            path,
            "scaled fp8 safetensors",
            format!("scale `{key}` {why}"),
        )
    };
    if numel != 1 {
        return Err(bad(&format!(
            "has shape {:?}; only one scale per tensor is supported",
            e.shape
        )));
    }
    let v = match e.dtype {
        Some(DType::F32) if raw.len() == 4 => f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]),
        Some(DType::F16) if raw.len() == 2 => {
            burn::tensor::f16::from_bits(u16::from_le_bytes([raw[0], raw[1]])).to_f32()
        }
        Some(DType::BF16) if raw.len() == 2 => {
            f32::from_bits((u16::from_le_bytes([raw[0], raw[1]]) as u32) << 16)
        }
        _ => return Err(bad(&format!("is {}, not a float scalar", e.file_dtype))),
    };
    if !v.is_finite() {
        return Err(bad(&format!("is {v}")));
    }
    Ok(v)
}

/// One layer's quantization note: `{"format": …}` (other fields are not read).
#[derive(serde::Deserialize)]
struct Info {
    format: String,
}

/// Checks the `{"format": …}` of a `.comfy_quant` tensor against its weight.
fn check_quant_info(raw: &[u8], weight: Option<&Entry>, path: &Path, key: &str) -> Result<()> {
    let info: Info = serde_json::from_slice(raw)
        .map_err(|e| Error::format(path, "scaled fp8 safetensors", format!("{key}: {e}")))?;
    check_format(&info, weight, path, key)
}

/// Checks the safetensors header's `_quantization_metadata` (`{"layers": {"<layer>":
/// {"format": …}}}`): every layer it names must have a `<layer>.weight` stored in that
/// format among `entries`.
pub(crate) fn check_quantization_metadata(
    json: &str,
    entries: &BTreeMap<String, Entry>,
    path: &Path,
) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        layers: BTreeMap<String, Info>,
    }
    let meta: Metadata = serde_json::from_str(json).map_err(|e| {
        Error::format(
            path,
            "scaled fp8 safetensors",
            format!("the header's `_quantization_metadata`: {e}"),
        )
    })?;
    for (layer, info) in &meta.layers {
        let key = format!("`_quantization_metadata` layer `{layer}`");
        check_format(info, entries.get(&format!("{layer}.weight")), path, &key)?;
    }
    Ok(())
}

/// Checks a declared format against the weight it is declared for (`what` names the
/// declaration in errors).
fn check_format(info: &Info, weight: Option<&Entry>, path: &Path, key: &str) -> Result<()> {
    let want = match info.format.as_str() {
        "float8_e4m3fn" => Encoding::F8_E4M3,
        "float8_e5m2" => Encoding::F8_E5M2,
        other => {
            return Err(Error::format(
                path,
                "scaled fp8 safetensors",
                format!(
                    "{key} declares format `{other}`; lynx-rs reads float8_e4m3fn and \
                     float8_e5m2"
                ),
            ));
        }
    };
    match weight.and_then(|w| w.encoding) {
        Some(found) if found == want => Ok(()),
        _ => Err(Error::format(
            path,
            "scaled fp8 safetensors",
            format!(
                "{key} declares {} but its weight is not stored so",
                info.format
            ),
        )),
    }
}

/// Folds the scales of a safetensors file's `entries` into their weights and takes out
/// the tensors that are not weights (markers, input scales, quantization notes; the
/// embedded tokenizer goes to `embedded`).
pub(crate) fn fold(
    mut entries: BTreeMap<String, Entry>,
    mmap: &Mmap,
    path: &Path,
    file: usize,
    embedded: &mut BTreeMap<String, (usize, (usize, usize))>,
) -> Result<BTreeMap<String, Entry>> {
    let consumed: Vec<String> = entries.keys().filter(|k| is_consumed(k)).cloned().collect();
    for key in consumed {
        let Some(e) = entries.remove(&key) else {
            continue;
        };
        if key == SPIECE {
            embedded.insert(key, (file, e.range));
            continue;
        }
        if let Some(layer) = WEIGHT_SCALES.iter().find_map(|s| key.strip_suffix(s)) {
            let value = scalar(mmap, &e, path, &key)?;
            let weight_key = format!("{layer}.weight");
            let Some(w) = entries.get_mut(&weight_key) else {
                return Err(Error::format(
                    path,
                    "scaled fp8 safetensors",
                    format!("scale `{key}` has no `{weight_key}` beside it"),
                ));
            };
            if w.scale.is_some() {
                return Err(Error::format(
                    path,
                    "scaled fp8 safetensors",
                    format!("`{weight_key}` has two scales"),
                ));
            }
            w.encoding = match (w.encoding, w.dtype) {
                (Some(enc), _) => Some(enc),
                (None, Some(DType::F32)) => Some(Encoding::F32),
                (None, Some(DType::F16)) => Some(Encoding::F16),
                (None, Some(DType::BF16)) => Some(Encoding::BF16),
                _ => {
                    return Err(Error::Dtype {
                        path: path.to_path_buf(),
                        key: weight_key,
                        dtype: w.file_dtype.clone(),
                    });
                }
            };
            w.scale = Some(value);
        } else if let Some(layer) = key.strip_suffix(QUANT_INFO) {
            let raw = bytes(mmap, &e, path, &key)?;
            let weight = entries.get(&format!("{layer}.weight"));
            check_quant_info(raw, weight, path, &format!("`{key}`"))?;
        }
        // Markers and input scales: nothing to keep.
    }
    Ok(entries)
}

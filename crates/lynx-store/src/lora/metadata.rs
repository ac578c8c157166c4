//! The PEFT settings diffusers keeps in a LoRA file's safetensors header: metadata key
//! `lora_adapter_metadata`, a JSON object whose keys carry the component's prefix
//! (`"transformer.r": 4`, `"transformer.lora_alpha": 6.0`, `"transformer.alpha_pattern"`,
//! …), as diffusers releases after 0.33 write it (huggingface/diffusers#11324).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use lynx_core::{Error, Result};

/// The header is read only up to this size (real LoRA headers are under 1 MiB).
const MAX_HEADER: u64 = 64 << 20;

/// What scales a PEFT file's low-rank terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdapterConfig {
    /// `lora_alpha`; `None` when the file does not say (alpha = rank then).
    pub alpha: Option<f64>,
    /// `alpha_pattern`: alphas for modules whose name ends with the pattern.
    pub alpha_pattern: BTreeMap<String, f64>,
    /// `use_rslora`: scale `alpha / √r` instead of `alpha / r`.
    pub rslora: bool,
}

impl AdapterConfig {
    /// The alpha of `module` (a diffusers module name): a matching `alpha_pattern` entry,
    /// else `lora_alpha`.
    pub fn alpha_for(&self, module: &str) -> Option<f64> {
        self.alpha_pattern
            .iter()
            .filter(|(pattern, _)| {
                module == pattern.as_str() || module.ends_with(&format!(".{pattern}"))
            })
            .max_by_key(|(pattern, _)| pattern.len())
            .map(|(_, &alpha)| alpha)
            .or(self.alpha)
    }
}

/// The `__metadata__` strings of the safetensors file at `path` (empty when it has
/// none). Reads the header only, whatever the file's size.
pub fn read_header_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n > size.saturating_sub(8) {
        return Err(Error::format(
            path,
            "safetensors",
            format!("header of {n} bytes in a file of {size}"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::io(path, e))?;
    header_metadata(&header).map_err(|reason| Error::format(path, "safetensors", reason))
}

/// The `__metadata__` strings of a safetensors header (its JSON bytes).
pub fn header_metadata(header: &[u8]) -> std::result::Result<BTreeMap<String, String>, String> {
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: Option<BTreeMap<String, String>>,
    }
    let header: Header = serde_json::from_slice(header).map_err(|e| format!("header JSON: {e}"))?;
    Ok(header.metadata.unwrap_or_default())
}

/// Parses `lora_adapter_metadata` (the JSON string itself). Keys are read with or
/// without a component prefix (`transformer.`); `use_dora` is refused (DoRA's
/// magnitude vectors are not a low-rank sum).
pub fn parse_adapter_config(json: &str) -> std::result::Result<AdapterConfig, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("`lora_adapter_metadata` JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("`lora_adapter_metadata` is not a JSON object".into());
    };
    let field = |name: &str| {
        map.iter()
            .filter(|(k, _)| *k == name || k.ends_with(&format!(".{name}")))
            .map(|(_, v)| v)
            .next()
    };
    let mut config = AdapterConfig::default();
    match field("lora_alpha") {
        None | Some(serde_json::Value::Null) => {}
        Some(v) => {
            config.alpha = Some(
                number(v).ok_or_else(|| format!("`lora_alpha` is {v}, not a positive number"))?,
            );
        }
    }
    if let Some(serde_json::Value::Object(patterns)) = field("alpha_pattern") {
        for (pattern, v) in patterns {
            let alpha = number(v).ok_or_else(|| {
                format!("`alpha_pattern` `{pattern}` is {v}, not a positive number")
            })?;
            config.alpha_pattern.insert(pattern.clone(), alpha);
        }
    }
    config.rslora = matches!(field("use_rslora"), Some(serde_json::Value::Bool(true)));
    if matches!(field("use_dora"), Some(serde_json::Value::Bool(true))) {
        return Err("it is a DoRA (`use_dora`), which lynx-rs does not apply".into());
    }
    Ok(config)
}

fn number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().filter(|a| a.is_finite() && *a > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prefixed_peft_settings() {
        let json = r#"{"transformer.r": 4, "transformer.lora_alpha": 6.0,
            "transformer.alpha_pattern": {"attn1.to_q": 2}, "transformer.use_rslora": false}"#;
        let c = parse_adapter_config(json).unwrap();
        assert_eq!(c.alpha, Some(6.0));
        assert_eq!(c.alpha_for("blocks.0.attn1.to_q"), Some(2.0));
        assert_eq!(c.alpha_for("blocks.0.attn1.to_k"), Some(6.0));
        assert!(!c.rslora);
        assert_eq!(
            parse_adapter_config("{}").unwrap(),
            AdapterConfig::default()
        );
    }

    #[test]
    fn refuses_bad_settings() {
        for bad in [
            "[]",
            "{",
            r#"{"lora_alpha": "six"}"#,
            r#"{"lora_alpha": -1}"#,
            r#"{"alpha_pattern": {"q": null}}"#,
            r#"{"use_dora": true}"#,
        ] {
            assert!(parse_adapter_config(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_metadata_strings() {
        let m = header_metadata(br#"{"__metadata__": {"format": "pt"}, "a": {}}"#).unwrap();
        assert_eq!(m.get("format").map(String::as_str), Some("pt"));
        assert!(header_metadata(b"{}").unwrap().is_empty());
        assert!(header_metadata(br#"{"__metadata__": {"x": 1}}"#).is_err());
    }
}

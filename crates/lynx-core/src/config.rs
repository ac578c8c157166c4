//! Typed configs from diffusers / transformers `config.json` files.
//!
//! Each crate declares a plain `serde` struct for its config (burn's `#[derive(Config)]`
//! drops `#[serde]` attributes, so it is not used for files). Unknown fields are
//! ignored; a missing required field is an error naming the field and the file.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Parses the JSON file at `path` into `T`.
pub fn load_json<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile {
                path: path.to_path_buf(),
                hint: "a diffusers model folder has a config.json in each part".into(),
            }
        } else {
            Error::io(path, e)
        }
    })?;
    parse_json(&text, path)
}

/// Parses JSON `text` (read from `path`, used in messages) into `T`.
pub fn parse_json<T: DeserializeOwned>(text: &str, path: impl AsRef<Path>) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        // serde_json says "missing field `x` at line L column C": keep that wording.
        Error::config(path.as_ref(), e)
    })
}

/// What kind of JSON value `v` is, as a message says it (`"a string"`, `"null"`, …).
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Rejects a config option this crate does not implement, naming it.
pub fn unsupported(
    path: impl AsRef<Path>,
    field: &str,
    value: impl std::fmt::Debug,
    why: &str,
) -> Error {
    Error::config(
        path.as_ref(),
        format!("`{field}` = {value:?} is not supported: {why}"),
    )
}

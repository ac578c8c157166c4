//! The five facial landmarks: left eye, right eye, nose tip, left and right mouth corner,
//! in image pixels — the order of insightface's `kps` and of RetinaFace's output.
//!
//! On disk they are JSON, an array of five `[x, y]` pairs:
//! `[[52.3, 70.1], [91.8, 68.4], [73.0, 92.6], [57.5, 113.2], [88.9, 112.0]]`.

use std::path::Path;

use lynx_core::config::json_kind;
use lynx_core::{Error, Result};
use serde_json::Value;

/// Five `(x, y)` points in pixel coordinates of the photo they were found in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Landmarks(pub [[f32; 2]; 5]);

const EXPECTED: &str = "an array of five [x, y] pixel pairs (left eye, right eye, nose, \
                        left mouth corner, right mouth corner)";

impl Landmarks {
    /// Reads landmarks from a JSON file (see the module docs for the layout).
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingFile {
                    path: path.to_path_buf(),
                    hint: "no such landmarks file".into(),
                }
            } else {
                Error::io(path, e)
            }
        })?;
        Self::from_json_str(&text).map_err(|reason| Error::format(path, "landmarks JSON", reason))
    }

    /// Parses landmarks from JSON text; the error says what is wrong with it.
    pub fn from_json_str(text: &str) -> std::result::Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("{e}; expected {EXPECTED}"))?;
        let Value::Array(points) = value else {
            return Err(format!("expected {EXPECTED}, found {}", json_kind(&value)));
        };
        if points.len() != 5 {
            return Err(format!(
                "expected {EXPECTED}, found {} entries",
                points.len()
            ));
        }
        let mut out = [[0.0f32; 2]; 5];
        for (i, point) in points.iter().enumerate() {
            let pair = match point {
                Value::Array(p) if p.len() == 2 => p,
                Value::Array(p) => {
                    return Err(format!(
                        "point {i} has {} coordinates, expected two ([x, y])",
                        p.len()
                    ));
                }
                other => {
                    return Err(format!(
                        "point {i} is {}, expected an [x, y] pair",
                        json_kind(other)
                    ));
                }
            };
            for (j, c) in pair.iter().enumerate() {
                let v = c.as_f64().ok_or_else(|| {
                    format!(
                        "point {i} coordinate {j} is {}, expected a number",
                        json_kind(c)
                    )
                })?;
                out[i][j] = v as f32;
            }
        }
        Self::new(out).map_err(|e| e.to_string())
    }

    /// Checks that every coordinate is finite.
    pub fn new(points: [[f32; 2]; 5]) -> Result<Self> {
        if points.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::input(format!(
                "landmarks must be finite numbers, got {points:?}"
            )));
        }
        Ok(Self(points))
    }

    /// The landmarks as JSON text, in the layout [`Landmarks::from_json_str`] reads.
    pub fn to_json(&self) -> String {
        let pts: Vec<String> = self.0.iter().map(|[x, y]| format!("[{x}, {y}]")).collect();
        format!("[{}]", pts.join(", "))
    }

    /// The points in f64.
    pub fn to_f64(&self) -> [[f64; 2]; 5] {
        self.0.map(|[x, y]| [f64::from(x), f64::from(y)])
    }
}

//! The one error type of lynx-rs' library crates.

use std::path::PathBuf;

/// Every failure a lynx-rs library reports. Variants name the file, the tensor key and
/// the expected and found shapes or dtypes, so that the message alone says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not what its format promises.
    #[error("{path} is not a valid {format} file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The format it should be in (`safetensors`, `PyTorch`, `PNG`, …).
        format: &'static str,
        /// What is wrong, in a sentence.
        reason: String,
    },
    /// A required file is absent from a model folder.
    #[error("missing file {path}: {hint}")]
    MissingFile {
        /// The file expected.
        path: PathBuf,
        /// Why it is expected or what holds it.
        hint: String,
    },
    /// A `config.json` lacks a field, has one of the wrong type, or asks for something
    /// this crate does not implement.
    #[error("config {path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("{path}: tensor `{key}` is missing")]
    MissingKey {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's key.
        key: String,
    },
    /// A tensor has a shape other than the model expects.
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The checkpoint (the shard, for sharded ones).
        path: PathBuf,
        /// The tensor's key.
        key: String,
        /// The shape the model needs (zeros where only the rank is known).
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype the loader does not convert.
    #[error(
        "{path}: tensor `{key}` has unsupported dtype {dtype} (supported: f32, f16, bf16, f64, fp8 e4m3fn/e5m2 with or without a scale, GGUF F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q2_K…Q6_K)"
    )]
    Dtype {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's key.
        key: String,
        /// The dtype as the file names it.
        dtype: String,
    },
    /// Loading a module left keys unmatched: everything that went wrong, in one report.
    #[error("{}", format_key_report(.path, .missing, .unexpected, .mismatched))]
    Keys {
        /// The checkpoint (its index, for sharded ones).
        path: PathBuf,
        /// Keys the model needs that the file lacks.
        missing: Vec<String>,
        /// Keys the file holds that the model does not use.
        unexpected: Vec<String>,
        /// `(key, expected, found)`
        mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
    /// An input tensor or argument has the wrong shape or value.
    #[error("invalid input: {0}")]
    Input(String),
    /// A device string could not be parsed or names a backend this build lacks.
    #[error("device `{device}`: {reason}")]
    Device {
        /// The device as given or as burn shows it.
        device: String,
        /// What went wrong.
        reason: String,
    },
    /// A run would need more memory than the device has (found before loading).
    #[error("{message}")]
    Memory {
        /// Bytes the run is estimated to need.
        needed: u64,
        /// Bytes the device has available.
        available: u64,
        /// The sentence: both figures in GB and the options that would make it fit.
        message: String,
    },
    /// No face was found in a photo: the detector saw none above its score threshold.
    #[error(
        "no face found in the {width}×{height} photo (RetinaFace, score threshold {threshold}); \
         pass the five landmarks explicitly or use a photo with a clearly visible face"
    )]
    NoFace {
        /// The photo's width in pixels.
        width: u32,
        /// Its height.
        height: u32,
        /// The detector's score threshold.
        threshold: f32,
    },
    /// An output cannot be written at `path`: a format this build does not write, a
    /// missing or read-only folder, something of the user's in the way, a frame size the
    /// format refuses. Found before a run where possible.
    #[error("{reason}")]
    Output {
        /// The output asked for.
        path: PathBuf,
        /// What is wrong, naming the path, and what would work.
        reason: String,
    },
    /// A run was stopped (by its observer, e.g. on Ctrl-C) before it finished.
    #[error("cancelled after {done} of {total} steps")]
    Cancelled {
        /// Steps completed.
        done: usize,
        /// Steps the run would have taken.
        total: usize,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Format`] for `path`. A multi-line `reason` (as some decoders give)
    /// is joined into one line.
    pub fn format(path: impl Into<PathBuf>, format: &'static str, reason: impl ToString) -> Self {
        Error::Format {
            path: path.into(),
            format,
            reason: one_line(reason.to_string()),
        }
    }

    /// An [`Error::Config`] for `path` (`reason` joined into one line).
    pub fn config(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Error::Config {
            path: path.into(),
            reason: one_line(reason.to_string()),
        }
    }

    /// An [`Error::Input`] (`reason` joined into one line).
    pub fn input(reason: impl ToString) -> Self {
        Error::Input(one_line(reason.to_string()))
    }

    /// An [`Error::Output`] for `path` (`reason` joined into one line).
    pub fn output(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Error::Output {
            path: path.into(),
            reason: one_line(reason.to_string()),
        }
    }

    /// An [`Error::Device`] for a failed read of `what` from `device` back to the host.
    pub fn read_back(device: &burn::tensor::Device, what: &str, e: impl std::fmt::Debug) -> Self {
        Error::Device {
            device: format!("{device:?}"),
            reason: format!("reading {what} back to the host failed: {e:?}"),
        }
    }
}

/// `text` with its lines joined by `; ` (messages are one sentence each).
fn one_line(text: String) -> String {
    if !text.contains(['\n', '\r']) {
        return text;
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn format_key_report(
    path: &std::path::Path,
    missing: &[String],
    unexpected: &[String],
    mismatched: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    const SHOWN: usize = 8;
    let list = |keys: &[String]| {
        let mut s = keys
            .iter()
            .take(SHOWN)
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if keys.len() > SHOWN {
            s.push_str(&format!(" and {} more", keys.len() - SHOWN));
        }
        s
    };
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} missing tensor(s): {}",
            missing.len(),
            list(missing)
        ));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "{} unused tensor(s): {}",
            unexpected.len(),
            list(unexpected)
        ));
    }
    if !mismatched.is_empty() {
        let shown = mismatched
            .iter()
            .take(SHOWN)
            .map(|(k, e, f)| format!("`{k}` is {f:?}, expected {e:?}"))
            .collect::<Vec<_>>()
            .join("; ");
        let more = if mismatched.len() > SHOWN {
            format!(" and {} more", mismatched.len() - SHOWN)
        } else {
            String::new()
        };
        parts.push(format!(
            "{} shape mismatch(es): {shown}{more}",
            mismatched.len()
        ));
    }
    format!(
        "{} does not match the model: {}",
        path.display(),
        parts.join("; ")
    )
}

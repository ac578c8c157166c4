//! The diffusers model folder and its `model_index.json`, which names the pipeline class
//! and, for each part, the library and class that load it (diffusers'
//! `DiffusionPipeline.from_pretrained` reads it first, as [`ModelIndex::load`] does here).
//!
//! A Wan2.1 text-to-video folder (`Wan-AI/Wan2.1-T2V-14B-Diffusers`) has
//! `"_class_name": "WanPipeline"` and the parts `transformer`
//! (`WanTransformer3DModel`), `vae` (`AutoencoderKLWan`), `text_encoder`
//! (`UMT5EncoderModel`), `tokenizer` (`T5TokenizerFast`) and `scheduler`
//! (`UniPCMultistepScheduler`). Anything else — an image-to-video folder, a Wan2.2
//! two-expert folder, a part missing or of another class — is refused with a sentence
//! naming the entry, before any weight is read.
//!
//! The original release's folder (`Wan-AI/Wan2.1-T2V-14B`: Wan's `config.json`, the
//! native sharded DiT, `models_t5_umt5-xxl-enc-bf16.pth`, `Wan2.1_VAE.pth`,
//! `google/umt5-xxl/`) is read as well: [`ModelFolder`] tells the two apart by their
//! content (`model_index.json`, or a `config.json` naming `WanModel`) and gives each part's
//! config and weights from either (see [`crate::original`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lynx_core::{Error, Result};
use lynx_dit::WanConfig;
use lynx_sampler::SchedulerConfig;
use lynx_text::{Tokenizer, Umt5Config};
use lynx_vae::VaeConfig;
use serde_json::Value;

use crate::original;
use crate::source::{Progress, Source};

/// The index file's name.
pub const MODEL_INDEX: &str = "model_index.json";

/// The pipeline class lynx-rs runs.
pub const PIPELINE_CLASS: &str = "WanPipeline";

/// Each part lynx-rs loads, with the classes it accepts for it.
pub const PARTS: [(&str, &[&str]); 5] = [
    ("transformer", &["WanTransformer3DModel"]),
    ("vae", &["AutoencoderKLWan"]),
    ("text_encoder", &["UMT5EncoderModel"]),
    ("tokenizer", &["T5TokenizerFast", "T5Tokenizer"]),
    (
        "scheduler",
        &["UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler"],
    ),
];

/// A parsed `model_index.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIndex {
    /// The file it was read from.
    pub path: PathBuf,
    /// `_class_name`: the diffusers pipeline class.
    pub class_name: String,
    /// Each part: `(library, class)`, either `None` where the file has `null`.
    pub parts: BTreeMap<String, (Option<String>, Option<String>)>,
}

impl ModelIndex {
    /// Reads `model_index.json` from the model folder `base` and checks it
    /// ([`ModelIndex::check`]).
    pub fn load(base: impl AsRef<Path>) -> Result<Self> {
        let base = base.as_ref();
        let path = base.join(MODEL_INDEX);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.clone(),
                hint: "a diffusers model folder names its parts in model_index.json (an \
                       original Wan folder has a config.json naming WanModel)"
                    .into(),
            },
            _ => Error::io(&path, e),
        })?;
        let index = Self::parse(&text, &path)?;
        index.check(base)?;
        Ok(index)
    }

    /// Parses the JSON `text` of the index at `path` (used in messages). Entries whose
    /// value is not a `[library, class]` pair are pipeline settings and are skipped.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let value: Value = serde_json::from_str(text).map_err(|e| Error::config(path, e))?;
        let Value::Object(map) = value else {
            return Err(Error::config(path, "expected a JSON object"));
        };
        let class_name = match map.get("_class_name") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(Error::config(
                    path,
                    format!("`_class_name` is {other}, expected a string"),
                ));
            }
            None => return Err(Error::config(path, "it has no `_class_name`")),
        };
        let mut parts = BTreeMap::new();
        for (key, v) in &map {
            let Value::Array(pair) = v else { continue };
            if key.starts_with('_') {
                continue;
            }
            let text = |v: &Value| match v {
                Value::String(s) => Ok(Some(s.clone())),
                Value::Null => Ok(None),
                other => Err(Error::config(
                    path,
                    format!("`{key}` holds {other}; expected [library, class] strings"),
                )),
            };
            let [library, class] = pair.as_slice() else {
                return Err(Error::config(
                    path,
                    format!(
                        "`{key}` has {} entries; expected [library, class]",
                        pair.len()
                    ),
                ));
            };
            parts.insert(key.clone(), (text(library)?, text(class)?));
        }
        Ok(Self {
            path: path.to_path_buf(),
            class_name,
            parts,
        })
    }

    /// Checks that the index describes a Wan2.1 text-to-video pipeline lynx-rs runs and
    /// that every part's folder exists in `base`.
    pub fn check(&self, base: impl AsRef<Path>) -> Result<()> {
        let base = base.as_ref();
        let bad = |reason: String| Err(Error::config(&self.path, reason));
        if self.class_name != PIPELINE_CLASS {
            return bad(format!(
                "`_class_name` is \"{}\"; lynx-rs runs Wan2.1 text-to-video folders \
                 (\"{PIPELINE_CLASS}\", e.g. Wan-AI/Wan2.1-T2V-14B-Diffusers)",
                self.class_name.escape_debug()
            ));
        }
        if let Some((_, Some(class))) = self.parts.get("transformer_2") {
            return bad(format!(
                "it has a second transformer (`transformer_2`, {class}): two-expert \
                 Wan2.2 folders are not supported"
            ));
        }
        for (part, classes) in PARTS {
            let class = match self.parts.get(part) {
                None => return bad(format!("it lists no `{part}`")),
                Some((_, None)) => return bad(format!("`{part}` is null")),
                Some((_, Some(class))) => class,
            };
            if !classes.contains(&class.as_str()) {
                return bad(format!(
                    "`{part}` is a \"{}\"; lynx-rs loads {}",
                    class.escape_debug(),
                    classes.join(" or ")
                ));
            }
            if !base.join(part).is_dir() {
                return Err(Error::MissingFile {
                    path: base.join(part),
                    hint: format!("{} lists `{part}`", self.path.display()),
                });
            }
        }
        Ok(())
    }
}

/// How a model folder is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderLayout {
    /// A diffusers folder (`model_index.json` and one folder per part).
    Diffusers,
    /// The original Wan release (see [`crate::original`]).
    WanOriginal,
    /// No folder: the DiT's single file, with the text encoder's and the VAE's files
    /// (see [`crate::single`]).
    SingleFiles,
}

/// A checked model: where each part's config and weights are, in any layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFolder {
    /// The folder (for [`FolderLayout::SingleFiles`], the DiT's file).
    pub base: PathBuf,
    /// Its layout, read from its content.
    pub layout: FolderLayout,
    /// The weight files replacing the folder's (made local).
    pub files: WeightFiles,
}

impl ModelFolder {
    /// Detects the layout of `base` and checks it: a `model_index.json` makes it a
    /// diffusers folder ([`ModelIndex::load`]); a `config.json` whose `_class_name` is
    /// `WanModel` an original Wan folder ([`original::check`]). Nothing else is read.
    pub fn open(base: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(base, &WeightFiles::default())
    }

    /// [`ModelFolder::open`] with `files` replacing parts of the folder's weights. A
    /// `base` that is a file is the DiT's single file: `files` must then give the text
    /// encoder and the VAE (and no other DiT), and the configs are the released ones
    /// ([`crate::single`]).
    pub fn open_with(base: impl AsRef<Path>, files: &WeightFiles) -> Result<Self> {
        let base = base.as_ref();
        for source in [&files.transformer, &files.text_encoder, &files.vae] {
            local(source)?;
        }
        if base.is_file() {
            let missing = |flag: &str, what: &str| {
                Error::input(format!(
                    "{} is a DiT file given without a model folder: give the {what} file                      too ({flag}; the configs are the released ones, see lynx_pipeline::single)",
                    base.display()
                ))
            };
            if let Some(t) = &files.transformer {
                return Err(Error::input(format!(
                    "the DiT is given twice: {} as the model and {t} as the transformer",
                    base.display()
                )));
            }
            let te = local(&files.text_encoder)?
                .ok_or_else(|| missing("--text-encoder", "text encoder"))?;
            let vae = local(&files.vae)?.ok_or_else(|| missing("--vae", "VAE"))?;
            crate::single::check(&te, &vae)?;
            return Ok(Self {
                base: base.to_path_buf(),
                layout: FolderLayout::SingleFiles,
                files: files.clone(),
            });
        }
        if !base.is_dir() {
            return Err(Error::MissingFile {
                path: base.to_path_buf(),
                hint: "expected a Wan2.1 model folder: diffusers (model_index.json, \
                       transformer/, vae/, text_encoder/, tokenizer/, scheduler/) or the \
                       original release (config.json, the DiT shards, \
                       models_t5_umt5-xxl-enc-bf16.pth, Wan2.1_VAE.pth, google/umt5-xxl/); \
                       or the DiT's single file with the text encoder and VAE files"
                    .into(),
            });
        }
        let layout = if !base.join(MODEL_INDEX).exists() && original::is_original(base) {
            original::check(base)?;
            FolderLayout::WanOriginal
        } else {
            if !base.join(MODEL_INDEX).exists()
                && !base.join("config.json").exists()
                && original::has_original_files(base)
            {
                return Err(Error::MissingFile {
                    path: base.join("config.json"),
                    hint: "the folder holds the original Wan release's files; its \
                           config.json (the DiT's, `_class_name` WanModel) gives the sizes"
                        .into(),
                });
            }
            ModelIndex::load(base)?;
            FolderLayout::Diffusers
        };
        Ok(Self {
            base: base.to_path_buf(),
            layout,
            files: files.clone(),
        })
    }

    /// The DiT's config; `text_dim` is the text encoder's width (the original folder's
    /// `config.json` and a single DiT file do not hold it).
    pub fn dit_config(&self, text_dim: usize) -> Result<WanConfig> {
        match self.layout {
            FolderLayout::Diffusers => WanConfig::load(self.base.join("transformer")),
            FolderLayout::WanOriginal => original::dit_config(&self.base, text_dim),
            FolderLayout::SingleFiles => crate::single::dit_config(&self.base, text_dim),
        }
    }

    /// The text encoder's config.
    pub fn text_config(&self) -> Result<Umt5Config> {
        match self.layout {
            FolderLayout::Diffusers => {
                Umt5Config::load(self.base.join("text_encoder").join("config.json"))
            }
            FolderLayout::WanOriginal => original::text_config(&self.base),
            FolderLayout::SingleFiles => Ok(original::released_text_config(&self.text_encoder()?)),
        }
    }

    /// The VAE's config.
    pub fn vae_config(&self) -> Result<VaeConfig> {
        match self.layout {
            FolderLayout::Diffusers => VaeConfig::load(self.base.join("vae").join("config.json")),
            FolderLayout::WanOriginal => original::vae_config(&self.base),
            FolderLayout::SingleFiles => Ok(original::released_vae_config(&self.vae()?)),
        }
    }

    /// The scheduler's config.
    pub fn scheduler(&self) -> Result<SchedulerConfig> {
        match self.layout {
            FolderLayout::Diffusers => SchedulerConfig::load(self.base.join("scheduler")),
            FolderLayout::WanOriginal | FolderLayout::SingleFiles => Ok(original::scheduler()),
        }
    }

    /// The tokenizer: the folder's `tokenizer.json`, or the one inside a single text
    /// encoder file.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match self.layout {
            FolderLayout::Diffusers => Tokenizer::from_pretrained(self.base.join("tokenizer")),
            FolderLayout::WanOriginal => {
                Tokenizer::from_pretrained(self.base.join(original::TOKENIZER_DIR))
            }
            FolderLayout::SingleFiles => crate::single::tokenizer(&self.text_encoder()?),
        }
    }

    /// The DiT's weights: the replacing file, else the folder's.
    pub fn transformer(&self) -> Result<PathBuf> {
        if let Some(t) = local(&self.files.transformer)? {
            return Ok(t);
        }
        Ok(match self.layout {
            FolderLayout::Diffusers => self.base.join("transformer"),
            FolderLayout::WanOriginal => original::dit_weights(&self.base),
            FolderLayout::SingleFiles => self.base.clone(),
        })
    }

    /// The text encoder's weights: the replacing file, else the folder's.
    pub fn text_encoder(&self) -> Result<PathBuf> {
        if let Some(t) = local(&self.files.text_encoder)? {
            return Ok(t);
        }
        match self.layout {
            FolderLayout::Diffusers => Ok(self.base.join("text_encoder")),
            FolderLayout::WanOriginal => Ok(self.base.join(original::T5_FILE)),
            FolderLayout::SingleFiles => Err(Error::input("no text encoder file was given")),
        }
    }

    /// The VAE's weights: the replacing file, else the folder's (its safetensors file
    /// when the diffusers folder holds one).
    pub fn vae(&self) -> Result<PathBuf> {
        if let Some(v) = local(&self.files.vae)? {
            return Ok(v);
        }
        match self.layout {
            FolderLayout::WanOriginal => Ok(self.base.join(original::VAE_FILE)),
            FolderLayout::SingleFiles => Err(Error::input("no VAE file was given")),
            FolderLayout::Diffusers => {
                let file = self
                    .base
                    .join("vae")
                    .join("diffusion_pytorch_model.safetensors");
                Ok(if file.is_file() {
                    file
                } else {
                    self.base.join("vae")
                })
            }
        }
    }
}

/// Checks that `base` is a Wan2.1 folder lynx-rs runs, diffusers or original (see
/// [`ModelFolder::open`]).
pub fn check_model_folder(base: &Path) -> Result<ModelFolder> {
    ModelFolder::open(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAN: &str = r#"{"_class_name": "WanPipeline", "_diffusers_version": "0.33.1",
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"]}"#;

    #[test]
    fn the_wan_index_parses() {
        let index = ModelIndex::parse(WAN, "m/model_index.json").unwrap();
        assert_eq!(index.class_name, "WanPipeline");
        assert_eq!(index.parts.len(), 5);
        assert_eq!(
            index.parts["vae"],
            (Some("diffusers".into()), Some("AutoencoderKLWan".into()))
        );
    }

    #[test]
    fn other_pipelines_and_parts_are_refused_by_name() {
        let base = lynx_testing::fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
        let check = |text: &str| {
            ModelIndex::parse(text, "m/model_index.json")
                .and_then(|i| i.check(&base))
                .unwrap_err()
                .to_string()
        };
        let e = check(&WAN.replace("\"WanPipeline\"", "\"WanImageToVideoPipeline\""));
        assert!(
            e.contains("WanImageToVideoPipeline") && e.contains("model_index.json"),
            "{e}"
        );
        let e = check(&WAN.replace("AutoencoderKLWan", "AutoencoderKL"));
        assert!(e.contains("`vae` is a \"AutoencoderKL\""), "{e}");
        let e = check(&WAN.replace("[\"diffusers\", \"AutoencoderKLWan\"]", "[null, null]"));
        assert!(e.contains("`vae` is null"), "{e}");
        let e = check(&WAN.replace("\"tokenizer\"", "\"tokenizer_x\""));
        assert!(e.contains("lists no `tokenizer`"), "{e}");
        let e = check(&WAN.replace(
            "}",
            ", \"transformer_2\": [\"diffusers\", \"WanTransformer3DModel\"]}",
        ));
        assert!(e.contains("Wan2.2"), "{e}");
        let e = check("[1, 2]");
        assert!(e.contains("JSON object"), "{e}");
    }
}

/// Weight files that replace parts of the model folder: the DiT, the text encoder or the
/// VAE as users hold them (a native or ComfyUI single file, fp8, scaled fp8, GGUF; see
/// `lynx_store::formats`). The folder still gives each part's config, the tokenizer and
/// the scheduler; without a folder (the DiT's file as the model, see
/// [`ModelFolder::open_with`]) the released ones are used. Each is a [`Source`]: a path, a URL or a file in a Hub repo
/// ([`Source::parse_file`]), made local by [`WeightFiles::resolved`] (which
/// [`crate::PipelineOptions::resolved`] and the pipeline's loading call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightFiles {
    /// Replaces `transformer/`'s weights.
    pub transformer: Option<Source>,
    /// Replaces `text_encoder/`'s weights.
    pub text_encoder: Option<Source>,
    /// Replaces `vae/`'s weights.
    pub vae: Option<Source>,
}

impl WeightFiles {
    /// These files made local ([`Source::file`]: URLs and Hub files fetched into the
    /// cache).
    pub fn resolved(&self, progress: &mut dyn Progress) -> Result<Self> {
        let mut w = self.clone();
        for source in [&mut w.transformer, &mut w.text_encoder, &mut w.vae]
            .into_iter()
            .flatten()
        {
            *source = Source::Local(source.file(progress)?);
        }
        Ok(w)
    }
}

/// The local path of a weight file, an error if it was not made local first.
fn local(source: &Option<Source>) -> Result<Option<PathBuf>> {
    source
        .as_ref()
        .map(|s| match s.as_local() {
            Some(p) => Ok(p.to_path_buf()),
            None => Err(Error::input(format!(
                "{s} was not fetched before use (WeightFiles::resolved)"
            ))),
        })
        .transpose()
}

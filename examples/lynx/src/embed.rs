//! `lynx embed-face`: the ArcFace embedding of a face, as `generate --face-embedding`
//! takes it.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use lynx_pipeline::lynx_arcface::{
    FaceAnalyzer, Landmarks, load_arcface, load_retinaface, load_rgb,
};
use lynx_pipeline::lynx_core::safetensors_io::{self, Dtype};
use lynx_pipeline::parse_device;

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// ArcFace IR-SE checkpoint (facexlib `recognition_arcface_ir_se50.pth` or .safetensors).
    #[arg(long)]
    pub arcface: PathBuf,
    /// Units per stage of the IR-SE backbone (e.g. 3,4,14,3). Read from the checkpoint
    /// unless two consecutive stages have the same width.
    #[arg(long, value_delimiter = ',')]
    pub arcface_depths: Option<Vec<usize>>,
    /// A photo: the face is detected (--detector) or taken from --landmarks.
    #[arg(long, conflicts_with = "aligned_face")]
    pub face: Option<PathBuf>,
    /// JSON array of five [x, y] points (left eye, right eye, nose, mouth corners).
    #[arg(long, requires = "face", conflicts_with = "detector")]
    pub landmarks: Option<PathBuf>,
    /// RetinaFace checkpoint (facexlib `detection_Resnet50_Final.pth`).
    #[arg(long, requires = "face")]
    pub detector: Option<PathBuf>,
    /// Scale photos whose longer side exceeds this many pixels down before detection
    /// (0: detect at the original size).
    #[arg(long, default_value_t = 1280)]
    pub detect_max_side: u32,
    /// Minimum face score of the detector.
    #[arg(long, default_value_t = 0.8)]
    pub detect_threshold: f32,
    /// An aligned 112×112 ArcFace crop.
    #[arg(long)]
    pub aligned_face: Option<PathBuf>,
    /// Output `.safetensors` (key `embedding`, `[D]`).
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let arcface = load_arcface(&args.arcface, &device, args.arcface_depths.as_deref())?;
    let detector = match &args.detector {
        Some(p) => Some(load_retinaface(p, &device)?),
        None => None,
    };
    let mut analyzer = FaceAnalyzer::new(arcface, detector);
    analyzer.options.max_side = (args.detect_max_side > 0).then_some(args.detect_max_side);
    analyzer.options.conf_threshold = args.detect_threshold;
    let embedding = match (&args.face, &args.aligned_face) {
        (Some(photo), None) => {
            let image = load_rgb(photo)?;
            let landmarks = match &args.landmarks {
                Some(p) => Some(Landmarks::from_json_file(p)?),
                None if args.detector.is_some() => None,
                None => bail!("--face needs --detector FILE or --landmarks JSON"),
            };
            analyzer.prepare(&image, landmarks)?.embedding
        }
        (None, Some(crop)) => analyzer.embed_aligned(&load_rgb(crop)?)?,
        _ => bail!("give --face PHOTO or --aligned-face PNG"),
    };
    let bytes: Vec<u8> = embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
    safetensors_io::save(
        &args.output,
        &[("embedding", Dtype::F32, &[embedding.len()], &bytes)],
        None,
    )?;
    eprintln!(
        "wrote {} ({} values)",
        args.output.display(),
        embedding.len()
    );
    Ok(())
}

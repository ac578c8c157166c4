//! `lynx embed-face`: the ArcFace embedding of a face, as `generate --face-embedding`
//! takes it.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use lynx_pipeline::lynx_arcface::{
    FaceAnalyzer, Landmarks, load_arcface, load_retinaface, load_rgb,
};
use lynx_pipeline::lynx_store::output::check_writable;
use lynx_pipeline::lynx_store::safetensors_io::{self, Dtype};
use lynx_pipeline::parse_device;

use crate::face::FaceFlags;
use crate::models::Bars;

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// ArcFace IR-SE checkpoint (facexlib `recognition_arcface_ir_se50.pth` or
    /// .safetensors), or its URL (fetched once into the Hugging Face cache folder).
    #[arg(long)]
    pub arcface: PathBuf,
    /// A photo: the face is detected (--detector) or taken from --landmarks.
    #[arg(long, conflicts_with = "aligned_face")]
    pub face: Option<PathBuf>,
    /// JSON array of five [x, y] points (left eye, right eye, nose, mouth corners).
    #[arg(long, requires = "face", conflicts_with = "detector")]
    pub landmarks: Option<PathBuf>,
    /// RetinaFace checkpoint (facexlib `detection_Resnet50_Final.pth`), or its URL.
    #[arg(long, requires = "face")]
    pub detector: Option<PathBuf>,
    #[command(flatten)]
    pub face_flags: FaceFlags,
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
    let device = parse_device(&args.device).map_err(crate::BadDevice)?;
    check_writable(&args.output, false)?;
    let depths = args.face_flags.arcface_depths.as_deref();
    // Paths or URLs, as `generate` takes them (the same `Source`).
    let fetch = |p: &std::path::Path| crate::models::file_source(p).file(&mut Bars::new(false));
    let arcface = load_arcface(fetch(&args.arcface)?, &device, depths)?;
    let detector = match &args.detector {
        Some(p) => Some(load_retinaface(fetch(p)?, &device)?),
        None => None,
    };
    let mut analyzer = FaceAnalyzer::new(arcface, detector);
    analyzer.options = args.face_flags.detect_options();
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

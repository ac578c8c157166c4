//! Writing generated videos: `.mp4` (H.264 via the bundled OpenH264 source, no system
//! ffmpeg; feature `export`, on by default), animated `.gif` and `.webp`, a folder of
//! PNGs, or `.safetensors` (key `frames`, `[F, H, W, 3]` f32 in `[0, 1]`).

use std::collections::BTreeMap;
use std::path::Path;

use lynx_core::{Error, Result};
use lynx_store::output::{StagedPath, check_writable};
use lynx_store::safetensors_io::{self, Dtype};

/// Frames of a video, `[F, H, W, 3]` RGB, f32 in `[0, 1]`, made by
/// [`Video::new`] (which checks that the data fills the shape).
#[derive(Debug, Clone)]
pub struct Video {
    frames: usize,
    height: usize,
    width: usize,
    data: Vec<f32>,
    metadata: BTreeMap<String, String>,
}

impl Video {
    /// `frames` frames of `height`×`width`, `data` row-major `[F, H, W, 3]`; an error
    /// unless every size is non-zero and `data` holds exactly `F·H·W·3` values.
    pub fn new(frames: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        let want = frames
            .checked_mul(height)
            .and_then(|n| n.checked_mul(width))
            .and_then(|n| n.checked_mul(3));
        if frames == 0 || height == 0 || width == 0 || want != Some(data.len()) {
            return Err(Error::input(format!(
                "a video of {frames} frames of {height}×{width} needs {} values, got {}",
                want.map_or("more than usize::MAX".to_string(), |n| n.to_string()),
                data.len()
            )));
        }
        Ok(Self {
            frames,
            height,
            width,
            data,
            metadata: BTreeMap::new(),
        })
    }

    /// Number of frames `F`.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Frame height `H`.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Frame width `W`.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The values, row-major `[F, H, W, 3]`.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, taken out.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// What made it (`seed`, `prompt`, `generator`, …), written where the format has
    /// room: the `__metadata__` of `.safetensors` outputs. A generation fills in its seed,
    /// so any run, `--seed -1` included, can be replayed from its output.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The metadata, to add to.
    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.metadata
    }

    /// Frame `i` as RGB bytes (`round(x·255)`, clamped).
    pub fn frame_rgb8(&self, i: usize) -> Vec<u8> {
        let n = self.height * self.width * 3;
        self.data[i * n..(i + 1) * n]
            .iter()
            .map(|x| (x.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect()
    }

    /// All frames as RGB bytes.
    pub fn to_rgb8(&self) -> Vec<Vec<u8>> {
        (0..self.frames).map(|i| self.frame_rgb8(i)).collect()
    }

    /// Saves by the path's extension: `.mp4`, `.gif`, `.webp`, `.safetensors`, `.png`
    /// (one frame), or — for a path without extension, ending in `/`, or an existing
    /// folder — a folder of `frame_NNNN.png`.
    ///
    /// Every format is written to a temporary sibling and renamed into place when
    /// complete ([`StagedPath`]): on any error nothing appears at `path`, and what was
    /// there is replaced only as a whole. [`check_output`] makes the same checks up
    /// front.
    pub fn save(&self, path: impl AsRef<Path>, fps: u32) -> Result<()> {
        let path = path.as_ref();
        match OutputKind::of(path, Some(self.frames))? {
            OutputKind::Mp4 => self.save_mp4(path, fps),
            OutputKind::Gif => self.save_gif(path, fps),
            OutputKind::Webp => self.save_webp(path, fps),
            OutputKind::Safetensors => self.save_safetensors(path),
            OutputKind::Png => staged(path, |tmp| self.write_png(tmp, 0)),
            OutputKind::PngFolder => self.save_pngs(path),
        }
    }

    fn write_png(&self, path: &Path, i: usize) -> Result<()> {
        image::save_buffer_with_format(
            path,
            &self.frame_rgb8(i),
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| match e {
            image::ImageError::IoError(io) => Error::io(path, io),
            other => Error::format(path, "PNG", other),
        })
    }

    /// One PNG per frame, `frame_0000.png`…, in the folder `dir`, which appears (or
    /// replaces a previous frame folder) only when every frame is written.
    pub fn save_pngs(&self, dir: &Path) -> Result<()> {
        check_frame_folder(dir)?;
        staged(dir, |tmp| {
            std::fs::create_dir(tmp).map_err(|e| Error::io(tmp, e))?;
            (0..self.frames)
                .try_for_each(|i| self.write_png(&tmp.join(format!("frame_{i:04}.png")), i))
        })
    }

    /// `frames`: `[F, H, W, 3]` f32 (written whole or not at all).
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let bytes: Vec<u8> = self.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let shape = [self.frames, self.height, self.width, 3];
        let metadata = (!self.metadata.is_empty()).then_some(&self.metadata);
        safetensors_io::save(path, &[("frames", Dtype::F32, &shape, &bytes)], metadata)
    }

    /// Animated GIF, looping (written whole or not at all).
    pub fn save_gif(&self, path: &Path, fps: u32) -> Result<()> {
        staged(path, |tmp| self.write_gif(tmp, path, fps))
    }

    fn write_gif(&self, tmp: &Path, path: &Path, fps: u32) -> Result<()> {
        use image::codecs::gif::{GifEncoder, Repeat};
        // Encoded in memory, then written in one call whose errors are seen (a
        // `BufWriter` dropped at the end would swallow a failed flush).
        let mut bytes = Vec::new();
        let mut enc = GifEncoder::new_with_speed(&mut bytes, 10);
        let err = |e: image::ImageError| Error::format(path, "GIF", e);
        enc.set_repeat(Repeat::Infinite).map_err(err)?;
        let delay = image::Delay::from_numer_denom_ms(1000, fps.max(1));
        for i in 0..self.frames {
            let rgba: Vec<u8> = self
                .frame_rgb8(i)
                .chunks(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect();
            let buf = image::RgbaImage::from_raw(self.width as u32, self.height as u32, rgba)
                .expect("buffer matches dimensions");
            enc.encode_frame(image::Frame::from_parts(buf, 0, 0, delay))
                .map_err(err)?;
        }
        drop(enc);
        std::fs::write(tmp, bytes).map_err(|e| Error::io(path, e))
    }

    /// Animated WebP: each frame a lossless VP8L image in an `ANMF` chunk (written whole
    /// or not at all).
    pub fn save_webp(&self, path: &Path, fps: u32) -> Result<()> {
        let duration = (1000 / fps.max(1)).min(0xFF_FFFF);
        let (w, h) = (self.width as u32, self.height as u32);
        let mut chunks = Vec::new();
        // VP8X: animation flag, canvas size − 1 (24-bit each).
        let mut vp8x = vec![0x02, 0, 0, 0];
        vp8x.extend_from_slice(&(w - 1).to_le_bytes()[..3]);
        vp8x.extend_from_slice(&(h - 1).to_le_bytes()[..3]);
        push_chunk(&mut chunks, b"VP8X", &vp8x);
        // ANIM: background colour (BGRA), loop count 0 = forever.
        push_chunk(&mut chunks, b"ANIM", &[0, 0, 0, 0, 0, 0]);
        for i in 0..self.frames {
            let mut still = Vec::new();
            image::codecs::webp::WebPEncoder::new_lossless(&mut still)
                .encode(&self.frame_rgb8(i), w, h, image::ExtendedColorType::Rgb8)
                .map_err(|e| Error::format(path, "WebP", e))?;
            let vp8l = find_chunk(&still, b"VP8L")
                .ok_or_else(|| Error::format(path, "WebP", "encoder wrote no VP8L chunk"))?;
            let mut anmf = Vec::with_capacity(vp8l.len() + 24);
            anmf.extend_from_slice(&[0; 6]); // frame x, y offsets
            anmf.extend_from_slice(&(w - 1).to_le_bytes()[..3]);
            anmf.extend_from_slice(&(h - 1).to_le_bytes()[..3]);
            anmf.extend_from_slice(&duration.to_le_bytes()[..3]);
            anmf.push(0b10); // no blending, no disposal
            push_chunk(&mut anmf, b"VP8L", vp8l);
            push_chunk(&mut chunks, b"ANMF", &anmf);
        }
        let mut out = Vec::with_capacity(chunks.len() + 12);
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&((chunks.len() + 4) as u32).to_le_bytes());
        out.extend_from_slice(b"WEBP");
        out.extend_from_slice(&chunks);
        staged(path, |tmp| {
            std::fs::write(tmp, out).map_err(|e| Error::io(path, e))
        })
    }

    /// H.264 in MP4 (OpenH264 encoder built from its bundled source; written whole or
    /// not at all). Without the `export` feature, an [`Error::Output`] saying so.
    pub fn save_mp4(&self, path: &Path, fps: u32) -> Result<()> {
        check_mp4(path, self.width, self.height)?;
        #[cfg(feature = "export")]
        {
            let shape = (self.width, self.height, fps);
            staged(path, |tmp| {
                crate::mp4::write_mp4(tmp, path, shape, self.frames, |i| self.frame_rgb8(i))
            })
        }
        #[cfg(not(feature = "export"))]
        {
            let _ = fps;
            Err(no_mp4(path))
        }
    }
}

/// What [`Video::save`] writes for a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputKind {
    Mp4,
    Gif,
    Webp,
    Safetensors,
    Png,
    PngFolder,
}

impl OutputKind {
    /// The kind for `path`; `frames`, when known, rules out `.png` for several frames.
    fn of(path: &Path, frames: Option<usize>) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let is_dir = path.to_str().is_some_and(|s| s.ends_with('/')) || path.is_dir();
        Ok(match ext.as_deref() {
            _ if is_dir => Self::PngFolder,
            None => Self::PngFolder,
            Some("mp4") => Self::Mp4,
            Some("gif") => Self::Gif,
            Some("webp") => Self::Webp,
            Some("safetensors") => Self::Safetensors,
            Some("png") if frames == Some(1) => Self::Png,
            Some("png") => {
                return Err(Error::output(
                    path,
                    format!(
                        "{} holds one frame; for a video of several frames give a folder \
                         (a path without extension) for one PNG per frame",
                        path.display()
                    ),
                ));
            }
            Some(other) => {
                return Err(Error::output(
                    path,
                    format!(
                        "cannot write `.{other}` ({}): use .mp4, .gif, .webp, .safetensors or \
                         a folder",
                        path.display()
                    ),
                ));
            }
        })
    }
}

/// Checks, before a run, that [`Video::save`] can write a video of `frames` frames
/// (`None`: not yet known, more than one) to `path`: a known format, a folder that
/// exists and accepts files, nothing read-only in the way, and — for a PNG folder — no
/// existing folder holding anything but frames (it would be replaced as a whole).
pub fn check_output(path: impl AsRef<Path>, frames: Option<usize>) -> Result<()> {
    let path = path.as_ref();
    let kind = OutputKind::of(path, frames.or(Some(2)))?;
    #[cfg(not(feature = "export"))]
    if kind == OutputKind::Mp4 {
        return Err(no_mp4(path));
    }
    let folder = kind == OutputKind::PngFolder;
    if folder {
        check_frame_folder(path)?;
    }
    check_writable(path, folder)
}

/// An existing folder is replaced by a frame folder only if it holds nothing but
/// `frame_*.png` files (an earlier output): anything else is the user's.
fn check_frame_folder(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("frame_") && name.ends_with(".png")) {
            return Err(Error::output(
                dir,
                format!(
                    "the output folder {} holds {name}, which is not a frame of an earlier \
                     output; give a new or empty folder",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// H.264 takes even frame sizes only.
fn check_mp4(path: &Path, width: usize, height: usize) -> Result<()> {
    if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(Error::output(
            path,
            format!(
                "cannot write {}: H.264 needs even frame sizes, got {width}×{height}",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The error of an `.mp4` output in a build without the encoder.
#[cfg(not(feature = "export"))]
fn no_mp4(path: &Path) -> Error {
    Error::output(
        path,
        format!(
            "cannot write {}: this build of lynx-pipeline has no H.264 encoder (feature \
             `export`); write .gif, .webp, .safetensors or a PNG folder",
            path.display()
        ),
    )
}

/// Writes through a temporary sibling of `path` renamed into place once `write`
/// succeeds; on failure the temporary is removed and `path` is untouched.
fn staged(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let staged = StagedPath::new(path)?;
    write(staged.path())?;
    staged.commit()
}

fn push_chunk(out: &mut Vec<u8>, tag: &[u8; 4], payload: &[u8]) {
    out.extend_from_slice(tag);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        out.push(0);
    }
}

/// The payload of the first RIFF chunk `tag` of a WebP file.
fn find_chunk<'a>(webp: &'a [u8], tag: &[u8; 4]) -> Option<&'a [u8]> {
    let mut pos = 12;
    while pos + 8 <= webp.len() {
        let len = u32::from_le_bytes(webp[pos + 4..pos + 8].try_into().ok()?) as usize;
        let body = webp.get(pos + 8..pos + 8 + len)?;
        if &webp[pos..pos + 4] == tag {
            return Some(body);
        }
        pos += 8 + len + (len & 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(frames: usize, h: usize, w: usize) -> Video {
        let mut data = Vec::with_capacity(frames * h * w * 3);
        for f in 0..frames {
            for y in 0..h {
                for x in 0..w {
                    data.extend([
                        x as f32 / w as f32,
                        y as f32 / h as f32,
                        f as f32 / frames as f32,
                    ]);
                }
            }
        }
        Video::new(frames, h, w, data).unwrap()
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lynx-export-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn outputs_appear_whole_or_not_at_all() {
        let dir = scratch("staged");
        // H.264 refuses odd sizes midway: nothing is written, the older file stays.
        std::fs::write(dir.join("v.mp4"), b"old").unwrap();
        assert!(gradient(1, 15, 16).save(dir.join("v.mp4"), 16).is_err());
        assert_eq!(std::fs::read(dir.join("v.mp4")).unwrap(), b"old");
        // A frame folder replaces an earlier one as a whole: no stale frame remains.
        gradient(3, 16, 16).save(dir.join("frames"), 16).unwrap();
        gradient(2, 16, 16).save(dir.join("frames"), 16).unwrap();
        assert!(dir.join("frames/frame_0001.png").is_file());
        assert!(!dir.join("frames/frame_0002.png").exists());
        // A folder holding the user's files is not replaced.
        std::fs::create_dir(dir.join("mine")).unwrap();
        std::fs::write(dir.join("mine/notes.txt"), b"x").unwrap();
        let e = gradient(2, 16, 16).save(dir.join("mine"), 16).unwrap_err();
        assert!(e.to_string().contains("notes.txt"), "{e}");
        assert!(dir.join("mine/notes.txt").is_file());
        // A single frame as .png; no temporary is left anywhere.
        gradient(1, 16, 16).save(dir.join("one.png"), 16).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["frames", "mine", "one.png", "v.mp4"]);
    }

    #[test]
    fn videos_are_checked_when_made() {
        assert!(Video::new(2, 16, 16, vec![0.0; 2 * 16 * 16 * 3]).is_ok());
        let e = Video::new(2, 16, 16, vec![0.0; 5]).unwrap_err().to_string();
        assert!(e.contains("needs 1536 values, got 5"), "{e}");
        assert!(Video::new(0, 16, 16, Vec::new()).is_err());
        assert!(Video::new(usize::MAX, 2, 2, Vec::new()).is_err());
    }

    #[test]
    fn output_errors_are_their_own_variant() {
        let dir = scratch("variant");
        for (path, frames) in [
            (dir.join("v.avi"), None),
            (dir.join("v.png"), None),
            (dir.join("missing/v.mp4"), None),
        ] {
            let e = check_output(&path, frames).unwrap_err();
            assert!(
                matches!(&e, Error::Output { path: p, .. } if *p == path),
                "{e:?}"
            );
        }
        let e = gradient(1, 15, 16)
            .save(dir.join("odd.mp4"), 16)
            .unwrap_err();
        assert!(matches!(e, Error::Output { .. }), "{e:?}");
        assert!(e.to_string().contains("even frame sizes"), "{e}");
    }

    #[test]
    fn outputs_are_checked_before_the_run() {
        let dir = scratch("check");
        assert!(check_output(dir.join("v.mp4"), None).is_ok());
        assert!(check_output(dir.join("frames"), None).is_ok());
        assert!(check_output(dir.join("one.png"), Some(1)).is_ok());
        for (path, frames, words) in [
            (dir.join("v.avi"), None, "cannot write `.avi`"),
            (dir.join("v.png"), None, "one frame"),
            (dir.join("missing/v.mp4"), None, "does not exist"),
        ] {
            let e = check_output(&path, frames).unwrap_err().to_string();
            assert!(e.contains(words), "{e}");
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "probes are gone"
        );
    }

    #[test]
    #[cfg(feature = "export")]
    fn writes_every_format() {
        let dir = std::env::temp_dir().join(format!("lynx-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let v = gradient(5, 32, 48);
        for name in ["v.mp4", "v.gif", "v.webp", "v.safetensors"] {
            let p = dir.join(name);
            v.save(&p, 16).unwrap();
            assert!(std::fs::metadata(&p).unwrap().len() > 100, "{name}");
        }
        // GIF and WebP decode back with all frames.
        use image::AnimationDecoder;
        let gif = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
            std::fs::File::open(dir.join("v.gif")).unwrap(),
        ))
        .unwrap();
        assert_eq!(gif.into_frames().count(), 5);
        let webp = image::codecs::webp::WebPDecoder::new(std::io::BufReader::new(
            std::fs::File::open(dir.join("v.webp")).unwrap(),
        ))
        .unwrap();
        let frames: Vec<_> = webp
            .into_frames()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(frames.len(), 5);
        // Lossless: the last frame decodes to the exact bytes.
        let last: Vec<u8> = frames[4]
            .buffer()
            .pixels()
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        assert_eq!(last, v.frame_rgb8(4));
        // MP4: the file starts with an ftyp box and holds an avc1 track.
        let mp4 = std::fs::read(dir.join("v.mp4")).unwrap();
        assert_eq!(&mp4[4..8], b"ftyp");
        assert!(mp4.windows(4).any(|w| w == b"avc1"));
        // PNG folder.
        v.save(dir.join("pngs/"), 16).unwrap();
        assert!(dir.join("pngs/frame_0004.png").is_file());
        assert!(v.save(dir.join("v.avi"), 16).is_err());
    }
}

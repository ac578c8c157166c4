//! H.264 in MP4 through the OpenH264 encoder built from its bundled source (feature
//! `export`, on by default): no system ffmpeg.

use std::io::Write;
use std::path::Path;

use lynx_core::{Error, Result};

/// Writes `frames` (RGB bytes, `width`×`height` each, `count` of them) as H.264 in MP4 to
/// `tmp`; errors name `path`, where the file will appear.
pub(crate) fn write_mp4(
    tmp: &Path,
    path: &Path,
    (width, height, fps): (usize, usize, u32),
    count: usize,
    frame: impl Fn(usize) -> Vec<u8>,
) -> Result<()> {
    use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate};
    use openh264::formats::{RgbSliceU8, YUVBuffer};
    let fps = fps.max(1);
    let h264 = |e: openh264::Error| Error::format(path, "H.264", e);
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(
            (width * height * fps as usize * 3 / 2) as u32,
        ))
        .max_frame_rate(FrameRate::from_hz(fps as f32));
    let mut encoder =
        Encoder::with_api_config(openh264::OpenH264API::from_source(), config).map_err(h264)?;
    let (mut sps, mut pps) = (None, None);
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let rgb = frame(i);
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (width, height)));
        let annex_b = encoder.encode(&yuv).map_err(h264)?.to_vec();
        let mut sample = Vec::with_capacity(annex_b.len() + 16);
        let mut is_sync = false;
        for nal in split_annex_b(&annex_b) {
            match nal[0] & 0x1f {
                7 => sps = Some(nal.to_vec()),
                8 => pps = Some(nal.to_vec()),
                t => {
                    is_sync |= t == 5;
                    sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    sample.extend_from_slice(nal);
                }
            }
        }
        samples.push((sample, is_sync));
    }
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err(Error::format(
            path,
            "H.264",
            "the encoder produced no SPS/PPS",
        ));
    };
    let mp4 = |e: mp4::Error| Error::format(path, "MP4", e);
    let file = std::fs::File::create(tmp).map_err(|e| Error::io(path, e))?;
    let config = mp4::Mp4Config {
        major_brand: "isom".parse().expect("fourcc"),
        minor_version: 512,
        compatible_brands: ["isom", "iso2", "avc1", "mp41"]
            .iter()
            .map(|b| b.parse().expect("fourcc"))
            .collect(),
        timescale: 1000,
    };
    let mut writer =
        mp4::Mp4Writer::write_start(std::io::BufWriter::new(file), &config).map_err(mp4)?;
    writer
        .add_track(&mp4::TrackConfig {
            track_type: mp4::TrackType::Video,
            timescale: fps * 1000,
            language: "und".into(),
            media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                width: width as u16,
                height: height as u16,
                seq_param_set: sps,
                pic_param_set: pps,
            }),
        })
        .map_err(mp4)?;
    for (i, (bytes, is_sync)) in samples.into_iter().enumerate() {
        writer
            .write_sample(
                1,
                &mp4::Mp4Sample {
                    start_time: i as u64 * 1000,
                    duration: 1000,
                    rendering_offset: 0,
                    is_sync,
                    bytes: mp4::Bytes::from(bytes),
                },
            )
            .map_err(mp4)?;
    }
    writer.write_end().map_err(mp4)?;
    writer.into_writer().flush().map_err(|e| Error::io(path, e))
}

/// NAL units of an Annex-B stream (start codes `00 00 01` / `00 00 00 01` removed).
fn split_annex_b(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |n| n - 3);
        while end > s && stream[end - 1] == 0 {
            end -= 1; // the leading zero of a 4-byte start code
        }
        if end > s {
            nals.push(&stream[s..end]);
        }
    }
    nals
}

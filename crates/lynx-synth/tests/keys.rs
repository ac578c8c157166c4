//! The tensors the models' own loaders ask for (walked on a recording checkpoint) against
//! the state dicts the previous synth-model wrote from its own description of every
//! layer (`tests/fixtures/synth/tiny_state_dicts.tsv`, listed from it before it was
//! removed): the same keys, shapes and fills, for the tiny preset; and the same
//! state-dict order where it matters (sharded files).

use lynx_adapters::IpLayout;
use lynx_synth::walk::{self, Param};
use lynx_synth::{Init, Preset};

/// `group → [(key, shape, init)]` as listed in the fixture.
fn expected() -> Vec<(String, Vec<(String, String, String)>)> {
    let path = lynx_testing::fixtures_dir().join("synth/tiny_state_dicts.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut groups: Vec<(String, Vec<(String, String, String)>)> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let row = (f[1].to_string(), f[2].to_string(), f[3].to_string());
        match groups.last_mut() {
            Some((g, rows)) if g == f[0] => rows.push(row),
            _ => groups.push((f[0].to_string(), vec![row])),
        }
    }
    groups
}

fn listed(params: Vec<Param>) -> Vec<(String, String, String)> {
    params
        .into_iter()
        .map(|p| {
            let init = match p.init {
                Init::Normal(std) => format!("Normal({std:?})"),
                other => format!("{other:?}"),
            };
            (p.key().to_string(), format!("{:?}", p.shape()), init)
        })
        .collect()
}

/// The files written in shards, where the state-dict order decides which tensor goes in
/// which shard. (A single file lists its tensors sorted, whatever the order.)
const SHARDED: [&str; 2] = ["text_encoder", "transformer"];

#[test]
fn tiny_records_equal_the_previous_tool() {
    let m = Preset::Tiny.model_set();
    let lite = m.lite.clone().unwrap();
    let (dim, blocks) = (m.dit.inner_dim(), m.dit.num_layers);
    let lite_layers = blocks.div_ceil(lite.interval);
    let out = m.resampler.output_dim;
    let walked = [
        ("text_encoder", walk::umt5_encoder(&m.text)),
        ("transformer", walk::dit(&m.dit)),
        ("vae", walk::vae(&m.vae)),
        ("lynx_full/resampler", walk::resampler(&m.resampler)),
        (
            "lynx_full/ip_layers",
            walk::ip_layers(IpLayout::Full, blocks, out, dim, m.n_registers),
        ),
        ("lynx_full/ref_layers", walk::ref_layers(blocks, dim)),
        ("lynx_lite/resampler", walk::resampler(&lite.resampler)),
        (
            "lynx_lite/ip_layers",
            walk::ip_layers(
                IpLayout::Lite,
                lite_layers,
                lite.resampler.output_dim,
                dim,
                0,
            ),
        ),
    ];
    let expected = expected();
    assert_eq!(expected.len(), walked.len());
    let mut differ = Vec::new();
    for ((group, params), (g, rows)) in walked.into_iter().zip(expected) {
        assert_eq!(group, g);
        let ours = listed(params.unwrap());
        let sorted = |v: &[(String, String, String)]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        if sorted(&ours) != sorted(&rows) {
            differ.push(format!("{group}: ours {ours:?}\nprevious {rows:?}"));
        } else if ours != rows && SHARDED.contains(&group) {
            let keys =
                |v: &[(String, String, String)]| v.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
            differ.push(format!(
                "{group} order: ours {:?}\nprevious {:?}",
                keys(&ours),
                keys(&rows)
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n\n"));
}

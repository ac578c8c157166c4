//! Reading a cache laid out as `huggingface_hub` writes it, offline; telling paths from
//! repo ids; options from environment variables.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{TempDir, adapter_files, fixtures, load_dir, wan_files};
use lynx_core::Error;
use lynx_hub::{HubOptions, NoProgress, RepoRef, Spec, repo_cache_dir, resolve};

const COMMIT: &str = "c0ffee0000000000000000000000000000c0ffee";

/// Writes `fixture` as the snapshot `COMMIT` of `repo_id` (under `sub`), with `refs/main`:
/// symlinks into `blobs/` as Python makes them on Unix, or plain files as on Windows.
fn cache_repo(opts: &HubOptions, repo_id: &str, fixture: &Path, sub: &str, symlinks: bool) {
    let dir = repo_cache_dir(opts, repo_id);
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), COMMIT).unwrap();
    let mut files = std::collections::BTreeMap::new();
    load_dir(fixture, sub, &mut files);
    for (n, (rel, bytes)) in files.into_iter().enumerate() {
        let dst = dir.join("snapshots").join(COMMIT).join(&rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        if symlinks && cfg!(unix) {
            #[cfg(unix)]
            {
                let etag = format!("{n:040x}");
                std::fs::create_dir_all(dir.join("blobs")).unwrap();
                std::fs::write(dir.join("blobs").join(&etag), &bytes).unwrap();
                let ups = "../".repeat(rel.split('/').count() + 1);
                std::os::unix::fs::symlink(format!("{ups}blobs/{etag}"), &dst).unwrap();
            }
        } else {
            std::fs::write(&dst, &bytes).unwrap();
        }
    }
}

fn offline(dir: &TempDir) -> HubOptions {
    let mut opts = HubOptions::in_dir(dir.path());
    opts.offline = true;
    // Unreachable on purpose: offline mode must not try.
    opts.endpoint = "http://127.0.0.1:9".into();
    opts
}

fn wan_fixture() -> PathBuf {
    fixtures().join("Wan2.1-T2V-tiny-Diffusers")
}

#[test]
fn offline_reads_symlinked_and_plain_snapshots() {
    let dir = TempDir::new("offline");
    let opts = offline(&dir);
    let wan = "test-org/Wan2.1-T2V-tiny-Diffusers";
    cache_repo(&opts, wan, &wan_fixture(), "", true);
    cache_repo(
        &opts,
        "test-org/lynx",
        &fixtures().join("lynx_lite"),
        "lynx_lite/",
        false,
    );

    let got = resolve(wan, None, &wan_files(), &opts, &mut NoProgress).unwrap();
    let snapshot = repo_cache_dir(&opts, wan).join("snapshots").join(COMMIT);
    assert_eq!(got, snapshot);
    let vae = got.join("vae/diffusion_pytorch_model.safetensors");
    assert!(vae.is_file() && (cfg!(not(unix)) || vae.is_symlink()));

    let lite = resolve(
        "test-org/lynx",
        Some("lynx_lite"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    );
    let lite = lite.unwrap();
    assert_eq!(
        lite,
        repo_cache_dir(&opts, "test-org/lynx")
            .join("snapshots")
            .join(COMMIT)
            .join("lynx_lite")
    );
    assert!(!lite.join("resampler.safetensors").is_symlink());

    // lynx_full is not cached: its first required file is named, with repo, revision and mode.
    let err = resolve(
        "test-org/lynx",
        Some("lynx_full"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }));
    let msg = err.to_string();
    for part in [
        "lynx_full/resampler.safetensors",
        "`test-org/lynx`",
        "revision `main`",
        "offline mode is on",
    ] {
        assert!(msg.contains(part), "`{part}` not in: {msg}");
    }

    // A commit hash needs no ref; an unknown branch is named.
    let pinned = format!("{wan}@{COMMIT}");
    assert_eq!(
        resolve(&pinned, None, &wan_files(), &opts, &mut NoProgress).unwrap(),
        snapshot
    );
    let msg = resolve(
        &format!("{wan}@dev"),
        None,
        &wan_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("no refs/dev") && msg.contains("offline mode is on"),
        "{msg}"
    );
}

#[test]
fn offline_sharded_checkpoint_needs_every_listed_shard() {
    let dir = TempDir::new("shards");
    let opts = offline(&dir);
    let wan = "test-org/Wan2.1-T2V-tiny-Diffusers";
    cache_repo(&opts, wan, &wan_fixture(), "", false);
    let shard = "transformer/diffusion_pytorch_model-00007-of-00009.safetensors";
    let snapshot = repo_cache_dir(&opts, wan).join("snapshots").join(COMMIT);
    std::fs::remove_file(snapshot.join(shard)).unwrap();
    let msg = resolve(wan, None, &wan_files(), &opts, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(shard), "{msg}");
}

#[test]
fn local_folders_are_returned_as_they_are() {
    let wan = wan_fixture();
    let opts = offline(&TempDir::new("local"));
    let spec = wan.to_str().unwrap();
    assert_eq!(
        resolve(spec, None, &wan_files(), &opts, &mut NoProgress).unwrap(),
        wan
    );
    // A folder holding the whole adapter repo, or the adapter folder itself.
    let root = fixtures();
    let full = resolve(
        root.to_str().unwrap(),
        Some("lynx_full"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    );
    assert_eq!(full.unwrap(), fixtures().join("lynx_full"));
    let lite = fixtures().join("lynx_lite");
    let got = resolve(
        lite.to_str().unwrap(),
        Some("lynx_full"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    );
    assert_eq!(got.unwrap(), lite);
}

#[test]
fn paths_and_repo_ids_are_told_apart() {
    let repo = |id: &str, rev: &str| Spec::Hub(RepoRef::new(id, rev).unwrap());
    assert_eq!(
        Spec::parse("Wan-AI/Wan2.1-T2V-14B-Diffusers").unwrap(),
        repo("Wan-AI/Wan2.1-T2V-14B-Diffusers", "main")
    );
    assert_eq!(
        Spec::parse("ByteDance/lynx@v1.0").unwrap(),
        repo("ByteDance/lynx", "v1.0")
    );
    assert_eq!(
        Spec::parse("ByteDance/lynx@refs/pr/3").unwrap(),
        repo("ByteDance/lynx", "refs/pr/3")
    );
    assert!(
        RepoRef::parse(&format!("a/b@{COMMIT}"))
            .unwrap()
            .is_commit()
    );
    let root = fixtures();
    assert_eq!(
        Spec::parse(root.to_str().unwrap()).unwrap(),
        Spec::Local(root.clone())
    );

    // Only a path: must exist.
    for spec in [
        "./org/name",
        "../x",
        "/no/such/dir",
        "models/wan/2.1",
        "org/name/",
    ] {
        let err = Spec::parse(spec).unwrap_err();
        assert!(matches!(err, Error::MissingFile { .. }), "{spec}: {err}");
    }
    // Neither.
    for spec in [
        "",
        "gpt2",
        "org/na me",
        "org/-name",
        "org--x/name",
        "org/name@",
        "org/name@a/../b",
    ] {
        let err = Spec::parse(spec).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{spec}: {err}");
    }
}

#[test]
fn options_from_environment_variables() {
    let home = TempDir::new("env");
    std::fs::write(home.path().join("token"), "hf_from_file\n").unwrap();
    let hf_home = home.path().to_str().unwrap().to_string();
    let vars = |pairs: &[(&str, &str)]| {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubOptions::from_vars(move |k| map.get(k).cloned())
    };

    let o = vars(&[("HOME", "/home/u")]);
    assert_eq!(o.cache_dir, Path::new("/home/u/.cache/huggingface/hub"));
    assert_eq!(
        o.url_cache_dir,
        Path::new("/home/u/.cache/huggingface/lynx/urls")
    );
    assert_eq!(o.endpoint, "https://huggingface.co");
    assert!(o.token.is_none() && !o.offline);

    let o = vars(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]);
    assert_eq!(o.cache_dir, Path::new("/xdg/huggingface/hub"));

    let o = vars(&[
        ("HF_HOME", &hf_home),
        ("HF_ENDPOINT", "http://mirror:8080/"),
        ("HF_HUB_OFFLINE", "1"),
    ]);
    assert_eq!(o.cache_dir, home.path().join("hub"));
    assert_eq!(o.endpoint, "http://mirror:8080");
    assert_eq!(o.token.as_deref(), Some("hf_from_file"));
    assert!(o.offline);
    assert!(
        !format!("{o:?}").contains("hf_from_file"),
        "Debug shows the token"
    );

    let o = vars(&[
        ("HOME", "/home/u"),
        ("HF_HOME", &hf_home),
        ("HF_HUB_CACHE", "~/hubcache"),
        ("HF_TOKEN", "hf_env"),
        ("HF_HUB_OFFLINE", "false"),
        ("HF_HUB_DOWNLOAD_TIMEOUT", "2.5"),
    ]);
    assert_eq!(o.cache_dir, Path::new("/home/u/hubcache"));
    assert_eq!(o.token.as_deref(), Some("hf_env"));
    assert!(!o.offline);
    assert_eq!(o.timeout.as_millis(), 2500);
    for yes in ["ON", "yes", "True"] {
        assert!(vars(&[("TRANSFORMERS_OFFLINE", yes)]).offline);
    }
}

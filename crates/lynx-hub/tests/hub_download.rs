//! Downloads from a Hub served by the test process (see `common`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Hub, Recorder, Repo, TempDir, adapter_files, etag_of, fixtures, load_dir, wan_files};
use lynx_hub::{FileSet, HubOptions, NoProgress, fetch_url, repo_cache_dir, resolve};

const WAN: &str = "test-org/Wan2.1-T2V-tiny-Diffusers";
const LYNX: &str = "test-org/lynx";
const WAN_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const LYNX_OLD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const LYNX_NEW: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn wan_dir() -> PathBuf {
    fixtures().join("Wan2.1-T2V-tiny-Diffusers")
}

/// The tiny Wan fixture plus files the pipeline does not need.
fn wan_repo() -> Repo {
    let mut files = BTreeMap::new();
    load_dir(&wan_dir(), "", &mut files);
    files.insert("README.md".into(), b"# tiny Wan".to_vec());
    files.insert("transformer/not_needed.safetensors".into(), vec![7; 5000]);
    files.insert("text_encoder/pytorch_model.bin".into(), vec![1; 3000]);
    Repo::single(WAN_COMMIT, files)
}

/// `lynx_full/` and `lynx_lite/` at two commits: `main` (new) and an old one whose
/// `lynx_full/resampler.safetensors` differs; tag `v1` points at the old one.
fn lynx_repo() -> Repo {
    let mut new = BTreeMap::new();
    load_dir(&fixtures().join("lynx_full"), "lynx_full/", &mut new);
    load_dir(&fixtures().join("lynx_lite"), "lynx_lite/", &mut new);
    new.insert("lynx_full/unused.bin".into(), vec![3; 1000]);
    new.insert("README.md".into(), b"# lynx".to_vec());
    let mut old = new.clone();
    old.insert(
        "lynx_full/resampler.safetensors".into(),
        b"old resampler".to_vec(),
    );
    let mut repo = Repo::default();
    repo.commits.insert(LYNX_OLD.into(), old);
    repo.commits.insert(LYNX_NEW.into(), new);
    repo.refs.insert("main".into(), LYNX_NEW.into());
    repo.refs.insert("v1".into(), LYNX_OLD.into());
    repo
}

fn setup(tag: &str) -> (Hub, TempDir, HubOptions) {
    let hub = Hub::start();
    hub.add_repo(WAN, wan_repo());
    hub.add_repo(LYNX, lynx_repo());
    let dir = TempDir::new(tag);
    let mut opts = HubOptions::in_dir(dir.path());
    opts.endpoint = hub.endpoint();
    opts.timeout = Duration::from_secs(5);
    (hub, dir, opts)
}

/// Every file under `fixture` has the same bytes under `got`.
fn assert_same_files(fixture: &Path, got: &Path) {
    let mut want = BTreeMap::new();
    load_dir(fixture, "", &mut want);
    for (rel, bytes) in want {
        let path = got.join(&rel);
        let found = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(found == bytes, "{rel} differs from the fixture");
    }
}

fn requested(hub: &Hub, needle: &str) -> bool {
    hub.log().iter().any(|r| r.path.contains(needle))
}

#[test]
fn wan_repo_downloads_only_the_needed_files() {
    let (hub, _dir, opts) = setup("wan");
    let mut rec = Recorder::default();
    let got = resolve(WAN, None, &wan_files(), &opts, &mut rec).unwrap();
    let cache = repo_cache_dir(&opts, WAN);
    assert_eq!(got, cache.join("snapshots").join(WAN_COMMIT));
    assert_same_files(&wan_dir(), &got);

    // Nothing the pipeline does not read was asked for or linked.
    for extra in ["README.md", "not_needed", "pytorch_model.bin"] {
        assert!(!requested(&hub, extra), "{extra} was requested");
    }
    assert!(!got.join("README.md").exists());
    // The text encoder has no index: asked for (404, remembered), then the single file.
    assert!(requested(&hub, "text_encoder/model.safetensors.index.json"));
    let absent = cache.join(".no_exist").join(WAN_COMMIT);
    assert!(
        absent
            .join("text_encoder/model.safetensors.index.json")
            .is_file()
    );

    // huggingface_hub's layout: refs/main, relative symlinks into blobs/, nothing partial.
    let main = std::fs::read_to_string(cache.join("refs/main")).unwrap();
    assert_eq!(main, WAN_COMMIT);
    let vae = got.join("vae/diffusion_pytorch_model.safetensors");
    #[cfg(unix)]
    {
        let target = std::fs::read_link(&vae).unwrap();
        let vae_bytes = std::fs::read(wan_dir().join("vae/diffusion_pytorch_model.safetensors"));
        let etag = etag_of(&vae_bytes.unwrap());
        assert_eq!(target, Path::new("../../../blobs").join(&etag));
    }
    for blob in std::fs::read_dir(cache.join("blobs")).unwrap() {
        let name = blob.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.contains('.'), "left over: {name}");
    }

    // Large files came from the CDN; every file was reported to the progress.
    let log = hub.log();
    assert!(log.iter().any(|r| r.cdn && r.path.starts_with("/cdn/")));
    assert!(log.iter().all(|r| r.auth.is_none()));
    assert_eq!(rec.starts.len(), 21, "{:?}", rec.starts);
    assert_eq!(rec.finished, rec.starts.len());
    // After the first request, files are asked for at the commit it reported.
    let resolves: Vec<_> = log
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .collect();
    assert!(resolves[0].path.contains("/resolve/main/model_index.json"));
    assert!(resolves[1..].iter().all(|r| r.path.contains(WAN_COMMIT)));

    // A second run asks one question (what `main` is now) and downloads nothing.
    hub.clear_log();
    let again = resolve(WAN, None, &wan_files(), &opts, &mut NoProgress).unwrap();
    assert_eq!(again, got);
    assert_eq!(hub.log().len(), 1, "{:?}", hub.log());
}

#[test]
fn adapter_subfolders_full_and_lite() {
    let (hub, _dir, opts) = setup("adapters");
    let full = resolve(
        LYNX,
        Some("lynx_full"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap();
    let snapshot = repo_cache_dir(&opts, LYNX).join("snapshots").join(LYNX_NEW);
    assert_eq!(full, snapshot.join("lynx_full"));
    assert_same_files(&fixtures().join("lynx_full"), &full);

    let lite = resolve(
        LYNX,
        Some("lynx_lite"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(lite, snapshot.join("lynx_lite"));
    assert_same_files(&fixtures().join("lynx_lite"), &lite);
    assert!(!lite.join("ref_layers.safetensors").exists());
    assert!(requested(&hub, "lynx_lite/ref_layers.safetensors"));
    assert!(!requested(&hub, "unused.bin") && !requested(&hub, "README.md"));

    // A required file that is absent is an error naming it.
    let files = FileSet::new().required("missing.safetensors");
    let err = resolve(LYNX, Some("lynx_lite"), &files, &opts, &mut NoProgress).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("lynx_lite/missing.safetensors") && msg.contains("404"),
        "{msg}"
    );
}

#[test]
fn resumes_incomplete_blobs_with_range_requests() {
    let (hub, _dir, opts) = setup("resume");
    let cache = repo_cache_dir(&opts, WAN);
    std::fs::create_dir_all(cache.join("blobs")).unwrap();
    // One large file (served by the CDN after a redirect), one small (served directly).
    let vae = std::fs::read(wan_dir().join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let shard_rel = "transformer/diffusion_pytorch_model-00001-of-00009.safetensors";
    let shard = std::fs::read(wan_dir().join(shard_rel)).unwrap();
    let (vae_tag, shard_tag) = (etag_of(&vae), etag_of(&shard));
    let partial = |etag: &str, bytes: &[u8]| {
        let path = cache.join("blobs").join(format!("{etag}.incomplete"));
        std::fs::write(path, bytes).unwrap();
    };
    partial(&vae_tag, &vae[..300_000]);
    partial(&shard_tag, &shard[..1000]);
    // And a transfer that breaks half-way is resumed within the same call.
    let tokenizer = std::fs::read(wan_dir().join("tokenizer/tokenizer.json")).unwrap();
    let tok_tag = etag_of(&tokenizer);
    hub.break_once(&tok_tag);

    let mut rec = Recorder::default();
    let got = resolve(WAN, None, &wan_files(), &opts, &mut rec).unwrap();
    assert_same_files(&wan_dir(), &got);
    let log = hub.log();
    let vae_get = log
        .iter()
        .find(|r| r.path == format!("/cdn/{vae_tag}"))
        .unwrap();
    assert_eq!(vae_get.range.as_deref(), Some("bytes=300000-"));
    let shard_get = log
        .iter()
        .find(|r| r.method == "GET" && r.path.ends_with(shard_rel))
        .unwrap();
    assert_eq!(shard_get.range.as_deref(), Some("bytes=1000-"));
    let start = |f: &str| rec.starts.iter().find(|s| s.0 == f).unwrap().clone();
    let vae_start = start("vae/diffusion_pytorch_model.safetensors");
    assert_eq!(
        (vae_start.1, vae_start.2),
        (300_000, Some(vae.len() as u64))
    );
    assert_eq!(start(shard_rel).1, 1000);
    let tok_gets: Vec<_> = log
        .iter()
        .filter(|r| r.path == format!("/cdn/{tok_tag}"))
        .collect();
    assert_eq!(tok_gets.len(), 2, "{tok_gets:?}");
    let half = tokenizer.len() / 2;
    assert_eq!(tok_gets[1].range, Some(format!("bytes={half}-")));
    assert!(
        !cache
            .join("blobs")
            .join(format!("{vae_tag}.incomplete"))
            .exists()
    );
}

#[test]
fn gated_repo_needs_the_token_which_never_reaches_the_cdn() {
    let (hub, _dir, mut opts) = setup("gated");
    let mut repo = wan_repo();
    repo.token = Some("hf_test_token".into());
    hub.add_repo("test-org/gated", repo);

    let err = resolve("test-org/gated", None, &wan_files(), &opts, &mut NoProgress).unwrap_err();
    let msg = err.to_string();
    for part in [
        "test-org/gated",
        "gated",
        "HF_TOKEN",
        "accept its licence",
        "no token",
    ] {
        assert!(msg.contains(part), "`{part}` not in: {msg}");
    }

    opts.token = Some("hf_wrong".into());
    let msg = resolve("test-org/gated", None, &wan_files(), &opts, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("the token sent has no access"), "{msg}");

    hub.clear_log();
    opts.token = Some("hf_test_token".into());
    let got = resolve("test-org/gated", None, &wan_files(), &opts, &mut NoProgress).unwrap();
    assert_same_files(&wan_dir(), &got);
    let log = hub.log();
    assert!(log.iter().any(|r| r.cdn));
    for r in &log {
        let want = if r.cdn {
            None
        } else {
            Some("Bearer hf_test_token")
        };
        assert_eq!(r.auth.as_deref(), want, "{r:?}");
    }
}

#[test]
fn offline_after_a_blob_is_deleted_then_online_repairs_it() {
    let (hub, _dir, mut opts) = setup("deleted");
    let got = resolve(WAN, None, &wan_files(), &opts, &mut NoProgress).unwrap();
    let rel = "transformer/diffusion_pytorch_model-00003-of-00009.safetensors";
    let blob = std::fs::canonicalize(got.join(rel)).unwrap();
    std::fs::remove_file(&blob).unwrap();

    opts.offline = true;
    let offline_log = hub.log().len();
    let msg = resolve(WAN, None, &wan_files(), &opts, &mut NoProgress)
        .unwrap_err()
        .to_string();
    for part in [WAN, "`main`", rel, "offline mode is on", "HF_HUB_OFFLINE"] {
        assert!(msg.contains(part), "`{part}` not in: {msg}");
    }
    assert_eq!(hub.log().len(), offline_log, "offline mode made a request");

    opts.offline = false;
    hub.clear_log();
    let again = resolve(WAN, None, &wan_files(), &opts, &mut NoProgress).unwrap();
    assert_same_files(&wan_dir(), &again);
    let gets: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path)
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert!(gets[0].ends_with(rel));
}

#[test]
fn revisions_pin_commits_and_tags() {
    let (hub, _dir, opts) = setup("revisions");
    let cache = repo_cache_dir(&opts, LYNX);

    let spec = format!("{LYNX}@{LYNX_OLD}");
    let old = resolve(
        &spec,
        Some("lynx_full"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(
        old,
        cache.join("snapshots").join(LYNX_OLD).join("lynx_full")
    );
    let resampler = std::fs::read(old.join("resampler.safetensors")).unwrap();
    assert_eq!(resampler, b"old resampler");
    let log = hub.log();
    assert!(
        log.iter()
            .filter(|r| !r.cdn)
            .all(|r| r.path.contains(LYNX_OLD))
    );
    assert!(!cache.join("refs").exists(), "a commit needs no ref");

    // Fully cached at a commit: no request at all.
    hub.clear_log();
    resolve(
        &spec,
        Some("lynx_full"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap();
    assert!(hub.log().is_empty(), "{:?}", hub.log());

    // A tag is resolved once, then files are fetched at its commit; blobs are shared.
    let tagged = resolve(
        &format!("{LYNX}@v1"),
        Some("lynx_full"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(tagged, old);
    assert_eq!(
        std::fs::read_to_string(cache.join("refs/v1")).unwrap(),
        LYNX_OLD
    );

    let main = resolve(
        LYNX,
        Some("lynx_full"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(
        main,
        cache.join("snapshots").join(LYNX_NEW).join("lynx_full")
    );
    assert_same_files(&fixtures().join("lynx_full"), &main);
    assert_eq!(
        std::fs::read_to_string(cache.join("refs/main")).unwrap(),
        LYNX_NEW
    );
    // ip_layers and ref_layers are the same blobs at both commits: fetched once.
    let ip_gets = hub
        .log()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("lynx_full/ip_layers.safetensors"))
        .count();
    assert_eq!(ip_gets, 0);
}

#[test]
fn unknown_repo_revision_and_unreachable_hub() {
    let (_hub, _dir, mut opts) = setup("errors");
    let msg = resolve(
        "test-org/nope",
        None,
        &adapter_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("`test-org/nope` was not found"), "{msg}");
    let msg = resolve(
        &format!("{LYNX}@nope"),
        None,
        &adapter_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("has no revision `nope`"), "{msg}");

    // Fill the cache, then lose the network: the cached snapshot is used, with a note.
    let got = resolve(
        LYNX,
        Some("lynx_lite"),
        &adapter_files(),
        &opts,
        &mut NoProgress,
    )
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    opts.endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut rec = Recorder::default();
    let again = resolve(LYNX, Some("lynx_lite"), &adapter_files(), &opts, &mut rec).unwrap();
    assert_eq!(again, got);
    assert!(rec.notes.len() == 1 && rec.notes[0].contains("could not be reached"));
    // Nothing cached: the network error, with the way out.
    let msg = resolve(WAN, None, &wan_files(), &opts, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("could not be reached") && msg.contains("HF_HUB_OFFLINE=1"),
        "{msg}"
    );
}

#[test]
fn fetch_url_follows_redirects_resumes_and_works_offline() {
    let (hub, _dir, mut opts) = setup("urls");
    let weights: Vec<u8> = (0..250_000u32).map(|i| (i % 251) as u8).collect();
    hub.add_url_file("detection_Resnet50_Final.pth", weights.clone());
    let url = format!("{}/gh/detection_Resnet50_Final.pth", hub.endpoint());
    opts.token = Some("hf_test_token".into());

    let mut rec = Recorder::default();
    let path = fetch_url(&url, &opts, &mut rec).unwrap();
    assert!(path.starts_with(opts.url_cache_dir.clone()));
    assert_eq!(path.file_name().unwrap(), "detection_Resnet50_Final.pth");
    assert_eq!(std::fs::read(&path).unwrap(), weights);
    assert_eq!(rec.starts[0].2, Some(weights.len() as u64));
    // The token went to the endpoint's host, not to the redirect target.
    let log = hub.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].auth.as_deref(), Some("Bearer hf_test_token"));
    assert!(log[1].cdn && log[1].auth.is_none());

    // Present: reused without a request, online or offline.
    hub.clear_log();
    assert_eq!(fetch_url(&url, &opts, &mut NoProgress).unwrap(), path);
    opts.offline = true;
    assert_eq!(fetch_url(&url, &opts, &mut NoProgress).unwrap(), path);
    assert!(hub.log().is_empty());

    // Offline and absent: an error naming the URL.
    let other = format!("{}/gh/other.pth", hub.endpoint());
    let msg = fetch_url(&other, &opts, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&other) && msg.contains("offline mode is on"),
        "{msg}"
    );

    // An interrupted download resumes.
    opts.offline = false;
    std::fs::remove_file(&path).unwrap();
    let part = path.with_file_name("detection_Resnet50_Final.pth.incomplete");
    std::fs::write(&part, &weights[..100_000]).unwrap();
    assert_eq!(fetch_url(&url, &opts, &mut NoProgress).unwrap(), path);
    assert_eq!(std::fs::read(&path).unwrap(), weights);
    let cdn_get = hub.log().into_iter().find(|r| r.cdn).unwrap();
    assert_eq!(cdn_get.range.as_deref(), Some("bytes=100000-"));

    // A missing URL is a 404 naming it.
    let msg = fetch_url(&other, &opts, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("404"), "{msg}");
}

/// Python's `huggingface_hub` reads the cache lynx-rs writes, and lynx-rs reads the cache
/// Python writes (from the same test Hub). Needs `LYNX_HUB_PYTHON`: a Python with
/// `huggingface_hub` installed.
#[test]
#[ignore = "needs LYNX_HUB_PYTHON, a python with huggingface_hub"]
fn python_huggingface_hub_shares_the_cache() {
    let python = std::env::var("LYNX_HUB_PYTHON").expect("LYNX_HUB_PYTHON");
    let (hub, dir, opts) = setup("python");
    // What lynx-rs fetches for the tiny model (no text-encoder index there).
    let mut files = BTreeMap::new();
    load_dir(&wan_dir(), "", &mut files);
    let names: Vec<String> = files.keys().cloned().collect();
    let script = r#"
import json, os, sys
from huggingface_hub import hf_hub_download, scan_cache_dir
repo, cache = sys.argv[1], sys.argv[2]
out = {}
for name in json.loads(sys.argv[3]):
    out[name] = os.path.realpath(hf_hub_download(repo, name, cache_dir=cache))
info = scan_cache_dir(cache)
out["warnings"] = [str(w) for w in info.warnings]
out["snapshots"] = [r.commit_hash for repo in info.repos for r in repo.revisions]
print(json.dumps(out))
"#;
    let run = |cache: &Path, offline: bool| -> serde_json::Value {
        let out = std::process::Command::new(&python)
            .args(["-c", script, WAN, cache.to_str().unwrap()])
            .arg(serde_json::to_string(&names).unwrap())
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_HUB_OFFLINE", if offline { "1" } else { "0" })
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env_remove("HF_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "python failed: {stderr}");
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // Python writes, lynx-rs reads offline.
    let py_cache = dir.path().join("python-cache");
    let report = run(&py_cache, false);
    assert_eq!(report["warnings"], serde_json::json!([]));
    let mut offline = opts.clone();
    offline.cache_dir = py_cache.clone();
    offline.offline = true;
    let got = resolve(WAN, None, &wan_files(), &offline, &mut NoProgress).unwrap();
    assert_eq!(
        got,
        py_cache
            .join("models--test-org--Wan2.1-T2V-tiny-Diffusers/snapshots")
            .join(WAN_COMMIT)
    );
    assert_same_files(&wan_dir(), &got);

    // lynx-rs writes, Python reads offline (and its cache scan finds nothing wrong).
    let got = resolve(WAN, None, &wan_files(), &opts, &mut NoProgress).unwrap();
    hub.clear_log();
    let report = run(&opts.cache_dir, true);
    assert!(hub.log().is_empty(), "python went online: {:?}", hub.log());
    assert_eq!(report["warnings"], serde_json::json!([]));
    assert_eq!(report["snapshots"], serde_json::json!([WAN_COMMIT]));
    for name in &names {
        let path = report[name.as_str()].as_str().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), files[name], "{name}");
        assert!(
            Path::new(path).starts_with(
                opts.cache_dir
                    .join("models--test-org--Wan2.1-T2V-tiny-Diffusers/blobs")
            )
        );
    }
    assert!(got.is_dir());
}

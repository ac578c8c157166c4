//! A minimal Hub in the test process: HTTP/1.1 on 127.0.0.1, one thread per connection,
//! serving repos under the Hub's URL scheme and a CDN on a second port.
//!
//! * `HEAD|GET /{org}/{name}/resolve/{revision}/{path}` with `x-repo-commit`, `etag`,
//!   and for files over [`LARGE`] bytes a 302 to the CDN with `x-linked-etag` and
//!   `x-linked-size` (as the Hub does for LFS files); `X-Error-Code` 404s
//!   (`EntryNotFound`, `RevisionNotFound`) and 401s (`RepoNotFound`, `GatedRepo` for a repo
//!   with a token when the request lacks it).
//! * `GET /cdn/{etag}` (CDN port) with `Range` support.
//! * `GET /gh/{name}` (Hub port): a 302 to `/cdn-files/{name}` on the CDN port, as GitHub
//!   release downloads redirect.
//!
//! Every request is logged (method, path, `Range`, `Authorization`, port).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Files above this size are redirected to the CDN.
pub const LARGE: usize = 100_000;

/// The workspace's `tests/fixtures` (lynx-core's tests sit two folders below the
/// workspace root); outside the workspace, the lead's checkout.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
    /// Whether the CDN port got it.
    pub cdn: bool,
}

#[derive(Clone, Default)]
pub struct Repo {
    /// commit → files.
    pub commits: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// branch or tag → commit.
    pub refs: BTreeMap<String, String>,
    /// Required `Authorization: Bearer {token}` (a gated repo).
    pub token: Option<String>,
}

impl Repo {
    /// A repo whose `main` is one commit holding `files`.
    pub fn single(commit: &str, files: BTreeMap<String, Vec<u8>>) -> Self {
        let mut repo = Repo::default();
        repo.commits.insert(commit.to_string(), files);
        repo.refs.insert("main".into(), commit.to_string());
        repo
    }
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    blobs: HashMap<String, Vec<u8>>,
    /// `/cdn-files/{name}` contents.
    urls: HashMap<String, Vec<u8>>,
    /// CDN blobs whose next `GET` sends half its body, then hangs up.
    flaky: std::collections::HashSet<String>,
    log: Vec<Req>,
}

pub struct Hub {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    pub port: u16,
    pub cdn_port: u16,
}

fn fnv(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A git-sha1-like etag (40 hex) for small files, a sha256-like one (64 hex) for large.
pub fn etag_of(bytes: &[u8]) -> String {
    let a = fnv(bytes, 0xcbf2_9ce4_8422_2325);
    let b = fnv(bytes, 0x1234_5678_9abc_def1);
    let c = fnv(bytes, 0x0f0f_0f0f_0f0f_0f0f);
    let d = fnv(bytes, 0x7777_1111_3333_5555);
    let full = format!("{a:016x}{b:016x}{c:016x}{d:016x}");
    if bytes.len() > LARGE {
        full
    } else {
        full[..40].to_string()
    }
}

/// Every file under `dir`, by `/`-separated relative path, prefixed by `prefix`.
pub fn load_dir(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        let rel = format!("{prefix}{name}");
        if entry.file_type().unwrap().is_dir() {
            load_dir(&entry.path(), &format!("{rel}/"), out);
        } else {
            out.insert(rel, std::fs::read(entry.path()).unwrap());
        }
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes (after announcing them all), then close.
    cut: Option<usize>,
}

impl Answer {
    fn new(status: u16) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut: None,
        }
    }
    fn header(mut self, k: &str, v: impl ToString) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    fn error(status: u16, code: &str, message: &str) -> Self {
        Answer::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
    }
}

/// 200 or 206 for `bytes` under an optional `Range: bytes=N-`.
fn ranged(bytes: &[u8], range: Option<&str>) -> Answer {
    if let Some(start) = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok())
    {
        if start >= bytes.len() {
            return Answer::new(416).header("Content-Range", format!("bytes */{}", bytes.len()));
        }
        let mut a = Answer::new(206).header(
            "Content-Range",
            format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len()),
        );
        a.body = bytes[start..].to_vec();
        return a;
    }
    let mut a = Answer::new(200);
    a.body = bytes.to_vec();
    a
}

impl Hub {
    pub fn start() -> Hub {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = hub.local_addr().unwrap().port();
        let cdn_port = cdn.local_addr().unwrap().port();
        for (listener, is_cdn) in [(hub, false), (cdn, true)] {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || serve(conn, state, is_cdn, port, cdn_port));
                }
            });
        }
        Hub {
            state,
            stop,
            port,
            cdn_port,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn add_repo(&self, id: &str, repo: Repo) {
        let mut st = self.state.lock().unwrap();
        for files in repo.commits.values() {
            for bytes in files.values() {
                st.blobs.insert(etag_of(bytes), bytes.clone());
            }
        }
        st.repos.insert(id.to_string(), repo);
    }

    pub fn add_url_file(&self, name: &str, bytes: Vec<u8>) {
        self.state.lock().unwrap().urls.insert(name.into(), bytes);
    }

    /// The next CDN `GET` of `etag` breaks half-way.
    pub fn break_once(&self, etag: &str) {
        self.state.lock().unwrap().flaky.insert(etag.to_string());
    }

    pub fn log(&self) -> Vec<Req> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = TcpStream::connect(("127.0.0.1", self.cdn_port));
    }
}

fn serve(conn: TcpStream, state: Arc<Mutex<State>>, cdn: bool, port: u16, cdn_port: u16) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Req {
        method: method.clone(),
        path: target.clone(),
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
        cdn,
    };
    let answer = {
        let mut st = state.lock().unwrap();
        st.log.push(req.clone());
        route(&mut st, &req, port, cdn_port)
    };
    let mut out = conn;
    let reason = match answer.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", answer.status);
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_length = answer
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !has_length {
        head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let _ = out.write_all(head.as_bytes());
    if method != "HEAD" {
        let end = answer.cut.unwrap_or(answer.body.len());
        let _ = out.write_all(&answer.body[..end]);
    }
    let _ = out.flush();
}

fn route(st: &mut State, req: &Req, port: u16, cdn_port: u16) -> Answer {
    let path = req.path.split('?').next().unwrap_or("");
    if req.cdn {
        if let Some(etag) = path.strip_prefix("/cdn/") {
            let flaky = req.method == "GET" && st.flaky.remove(etag);
            return match st.blobs.get(etag) {
                Some(bytes) => {
                    let mut a = ranged(bytes, req.range.as_deref());
                    if flaky {
                        a.cut = Some(a.body.len() / 2);
                    }
                    a
                }
                None => Answer::new(404),
            };
        }
        if let Some(name) = path.strip_prefix("/cdn-files/") {
            return match st.urls.get(name) {
                Some(bytes) => ranged(bytes, req.range.as_deref()),
                None => Answer::new(404),
            };
        }
        return Answer::new(404);
    }
    if let Some(name) = path.strip_prefix("/gh/") {
        return Answer::new(302).header(
            "Location",
            format!("http://127.0.0.1:{cdn_port}/cdn-files/{name}"),
        );
    }
    // /{org}/{name}/resolve/{rev}/{file...}
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if segs.len() != 5 || segs[2] != "resolve" {
        return Answer::new(404);
    }
    let id = format!("{}/{}", segs[0], segs[1]);
    let (rev, file) = (decode(segs[3]), decode(segs[4]));
    let Some(repo) = st.repos.get(&id) else {
        return Answer::error(401, "RepoNotFound", "Repository not found");
    };
    if let Some(token) = &repo.token
        && req.auth.as_deref() != Some(&format!("Bearer {token}"))
    {
        return Answer::error(
            401,
            "GatedRepo",
            &format!(
                "Access to model {id} is restricted. You must have access to it and be authenticated to access it. Please log in."
            ),
        );
    }
    let commit = match repo.refs.get(&rev) {
        Some(c) => c.clone(),
        None if repo.commits.contains_key(&rev) => rev.clone(),
        None => return Answer::error(404, "RevisionNotFound", "Invalid rev id"),
    };
    let files = &repo.commits[&commit];
    let Some(bytes) = files.get(&file) else {
        return Answer::error(404, "EntryNotFound", "Entry not found")
            .header("x-repo-commit", &commit);
    };
    let etag = etag_of(bytes);
    if bytes.len() > LARGE {
        return Answer::new(302)
            .header("x-repo-commit", &commit)
            .header("x-linked-etag", format!("\"{etag}\""))
            .header("x-linked-size", bytes.len())
            .header(
                "Location",
                format!("http://127.0.0.1:{cdn_port}/cdn/{etag}"),
            );
    }
    let _ = port;
    ranged(bytes, req.range.as_deref())
        .header("x-repo-commit", &commit)
        .header("ETag", format!("\"{etag}\""))
}

/// A temporary folder removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("lynx-hub-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Records every progress call.
#[derive(Default, Debug)]
pub struct Recorder {
    /// (file, done at start, total)
    pub starts: Vec<(String, u64, Option<u64>)>,
    pub last_done: u64,
    pub finished: usize,
    pub notes: Vec<String>,
}

impl lynx_hub::Progress for Recorder {
    fn start(&mut self, file: &str, done: u64, total: Option<u64>) {
        self.starts.push((file.to_string(), done, total));
        self.last_done = done;
    }
    fn update(&mut self, done: u64) {
        assert!(done >= self.last_done, "progress went backwards");
        self.last_done = done;
    }
    fn finish(&mut self) {
        self.finished += 1;
    }
    fn note(&mut self, message: &str) {
        self.notes.push(message.to_string());
    }
}

/// The files a Wan2.1 diffusers repo is fetched with (the pipeline's list).
pub fn wan_files() -> lynx_hub::FileSet {
    lynx_hub::FileSet::new()
        .required("model_index.json")
        .required("scheduler/scheduler_config.json")
        .required("text_encoder/config.json")
        .safetensors("text_encoder/model")
        .required("tokenizer/tokenizer.json")
        .optional("tokenizer/tokenizer_config.json")
        .optional("tokenizer/special_tokens_map.json")
        .optional("tokenizer/spiece.model")
        .required("transformer/config.json")
        .safetensors("transformer/diffusion_pytorch_model")
        .required("vae/config.json")
        .required("vae/diffusion_pytorch_model.safetensors")
}

/// The files of a Lynx adapter folder (the pipeline's list).
pub fn adapter_files() -> lynx_hub::FileSet {
    lynx_hub::FileSet::new()
        .required("resampler.safetensors")
        .required("ip_layers.safetensors")
        .optional("ref_layers.safetensors")
}

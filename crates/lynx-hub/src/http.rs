//! The two requests `hf_hub_download` makes, on `ureq`: the metadata `HEAD` and the
//! (resumed) `GET` of the file into a partial file.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::path::Path;

use ureq::Agent;
use ureq::http::Response;

use super::{HubOptions, Progress};
use lynx_core::error::Error;

/// What a `HEAD` of a `resolve` URL tells.
pub(crate) struct Meta {
    /// `x-repo-commit`.
    pub commit: Option<String>,
    /// `x-linked-etag`, else `etag`, without quotes or `W/`.
    pub etag: Option<String>,
    /// `x-linked-size`, else `content-length` of a non-redirect answer.
    pub size: Option<u64>,
    /// Where to `GET` the bytes: the CDN location of a redirect, or the URL itself.
    pub location: String,
}

/// Why a request failed.
pub(crate) enum HttpFail {
    /// No answer: the server could not be reached, or the transfer broke.
    Net {
        url: String,
        kind: ErrorKind,
        message: String,
    },
    /// The server answered with an error status.
    Status {
        url: String,
        status: u16,
        /// `X-Error-Code` (`GatedRepo`, `RepoNotFound`, `RevisionNotFound`, …).
        code: Option<String>,
        /// `X-Error-Message`.
        message: Option<String>,
        /// `x-repo-commit`, which the Hub sends with an `EntryNotFound` 404.
        commit: Option<String>,
    },
    /// A local failure (writing the partial file), already a lynx error.
    Local(Error),
}

impl From<Error> for HttpFail {
    fn from(e: Error) -> Self {
        HttpFail::Local(e)
    }
}

/// How often a broken transfer is resumed without any byte coming through.
pub(crate) const RESUMES: u32 = 3;

/// How one `GET` ended.
enum Attempt {
    Done(u64),
    /// The transfer broke mid-way; `progressed` if bytes came before it did.
    Broke {
        fail: HttpFail,
        progressed: bool,
    },
}

/// The agents, and the token with the one origin it may be sent to.
pub(crate) struct Client {
    head: Agent,
    get: Agent,
    token_origin: String,
    token: Option<String>,
}

/// `scheme://host[:port]` of an absolute URL.
pub(crate) fn origin(url: &str) -> Option<&str> {
    let rest = url.find("://").map(|i| i + 3)?;
    let end = url[rest..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| rest + i);
    Some(&url[..end])
}

fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn net(url: &str, e: ureq::Error) -> HttpFail {
    let kind = match &e {
        ureq::Error::Io(io) => io.kind(),
        ureq::Error::Timeout(_) => ErrorKind::TimedOut,
        ureq::Error::HostNotFound => ErrorKind::NotFound,
        ureq::Error::ConnectionFailed => ErrorKind::ConnectionRefused,
        _ => ErrorKind::Other,
    };
    HttpFail::Net {
        url: url.to_string(),
        kind,
        message: e.to_string(),
    }
}

fn status_fail(url: &str, resp: &Response<ureq::Body>) -> HttpFail {
    HttpFail::Status {
        url: url.to_string(),
        status: resp.status().as_u16(),
        code: header(resp, "x-error-code"),
        message: header(resp, "x-error-message"),
        commit: header(resp, "x-repo-commit"),
    }
}

impl Client {
    pub(crate) fn new(opts: &HubOptions) -> Self {
        let agent = |redirects: u32| {
            Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .user_agent(concat!("lynx-rs/", env!("CARGO_PKG_VERSION")))
                .timeout_connect(Some(opts.timeout))
                .timeout_recv_response(Some(opts.timeout))
                .timeout_per_read(Some(opts.timeout))
                .build()
                .new_agent()
        };
        Client {
            head: agent(0),
            get: agent(10),
            token_origin: origin(&opts.endpoint).unwrap_or("").to_string(),
            token: opts.token.clone(),
        }
    }

    /// `Authorization` for `url`: only towards the endpoint's origin, never to a CDN or
    /// another site.
    fn auth(&self, url: &str) -> Option<String> {
        let token = self.token.as_ref()?;
        (origin(url) == Some(self.token_origin.as_str())).then(|| format!("Bearer {token}"))
    }

    /// The metadata of a `resolve` URL: a `HEAD` that follows same-host (relative)
    /// redirects, such as a renamed repo's, but not the redirect to the CDN.
    pub(crate) fn head(&self, url: &str) -> Result<Meta, HttpFail> {
        let mut url = url.to_string();
        for _ in 0..5 {
            let mut req = self.head.head(&url).header("Accept-Encoding", "identity");
            if let Some(auth) = self.auth(&url) {
                req = req.header("Authorization", auth);
            }
            let resp = req.call().map_err(|e| net(&url, e))?;
            let status = resp.status().as_u16();
            if status >= 400 {
                return Err(status_fail(&url, &resp));
            }
            let commit = header(&resp, "x-repo-commit");
            let etag = header(&resp, "x-linked-etag")
                .or_else(|| header(&resp, "etag"))
                .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string());
            let linked_size = header(&resp, "x-linked-size").and_then(|s| s.parse().ok());
            if (300..400).contains(&status) {
                let Some(location) = header(&resp, "location") else {
                    return Err(status_fail(&url, &resp));
                };
                if location.starts_with('/') && !location.starts_with("//") {
                    url = format!("{}{location}", origin(&url).unwrap_or(""));
                    continue;
                }
                return Ok(Meta {
                    commit,
                    etag,
                    size: linked_size,
                    location,
                });
            }
            let size = linked_size
                .or_else(|| header(&resp, "content-length").and_then(|s| s.parse().ok()));
            return Ok(Meta {
                commit,
                etag,
                size,
                location: url,
            });
        }
        Err(HttpFail::Net {
            url,
            kind: ErrorKind::Other,
            message: "too many redirects".into(),
        })
    }

    /// Downloads `url` into `part`, continuing what `part` already holds with a `Range`
    /// request (starting over if the server ignores it). A transfer that breaks after
    /// bringing bytes is resumed, up to [`RESUMES`] times in a row without progress. Fails
    /// unless the file ends with `expected` bytes (or the size the server announced);
    /// `part` is kept for a later resume. Returns the size.
    pub(crate) fn download(
        &self,
        url: &str,
        part: &Path,
        expected: Option<u64>,
        label: &str,
        progress: &mut dyn Progress,
    ) -> Result<u64, HttpFail> {
        let mut idle = 0;
        loop {
            match self.attempt(url, part, expected, label, progress)? {
                Attempt::Done(size) => return Ok(size),
                Attempt::Broke { fail, progressed } => {
                    idle = if progressed { 0 } else { idle + 1 };
                    if idle > RESUMES {
                        return Err(fail);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200 << idle));
                }
            }
        }
    }

    fn attempt(
        &self,
        url: &str,
        part: &Path,
        expected: Option<u64>,
        label: &str,
        progress: &mut dyn Progress,
    ) -> Result<Attempt, HttpFail> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(|e| Error::io(part, e))?;
        let restart = |file: &std::fs::File| file.set_len(0).map_err(|e| Error::io(part, e));
        let mut have = file.metadata().map_err(|e| Error::io(part, e))?.len();
        if expected.is_some_and(|size| have > size) {
            restart(&file)?;
            have = 0;
        }
        if have > 0 && expected == Some(have) {
            return Ok(Attempt::Done(have));
        }
        let mut retried = false;
        let (resp, total) = loop {
            let mut req = self.get.get(url).header("Accept-Encoding", "identity");
            if have > 0 {
                req = req.header("Range", format!("bytes={have}-"));
            }
            if let Some(auth) = self.auth(url) {
                req = req.header("Authorization", auth);
            }
            let resp = req.call().map_err(|e| net(url, e))?;
            let length = header(&resp, "content-length").and_then(|s| s.parse::<u64>().ok());
            match resp.status().as_u16() {
                206 => {
                    // `bytes {start}-{end}/{total}`
                    let range = header(&resp, "content-range").unwrap_or_default();
                    let spec = range.trim_start_matches("bytes").trim();
                    let start = spec.split('-').next().and_then(|s| s.parse::<u64>().ok());
                    let size = spec.rsplit('/').next().and_then(|s| s.parse::<u64>().ok());
                    if start == Some(have) {
                        break (resp, size.or(length.map(|l| l + have)).or(expected));
                    }
                }
                200 => {
                    if have > 0 {
                        restart(&file)?;
                        have = 0;
                    }
                    break (resp, length.or(expected));
                }
                416 if have > 0 => {}
                _ => return Err(status_fail(url, &resp)),
            }
            if retried {
                return Err(status_fail(url, &resp));
            }
            // A range the server could not serve as asked: start over once.
            retried = true;
            restart(&file)?;
            have = 0;
        };
        let total = expected.or(total);
        let first = have;
        progress.start(label, have, total);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let broke = |have: u64, why: String| {
            let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
            HttpFail::Net {
                url: url.to_string(),
                kind: ErrorKind::UnexpectedEof,
                message: format!(
                    "the download stopped after {have}{of} bytes ({why}); {} is kept and the \
                     next run resumes it",
                    part.display()
                ),
            }
        };
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let fail = broke(have, e.to_string());
                    let progressed = have > first;
                    return Ok(Attempt::Broke { fail, progressed });
                }
            };
            file.write_all(&buf[..n]).map_err(|e| Error::io(part, e))?;
            have += n as u64;
            progress.update(have);
        }
        file.sync_all().map_err(|e| Error::io(part, e))?;
        match total {
            Some(size) if have < size => {
                let fail = broke(have, "the connection closed early".into());
                let progressed = have > first;
                return Ok(Attempt::Broke { fail, progressed });
            }
            Some(size) if have > size => {
                restart(&file)?;
                return Err(HttpFail::Net {
                    url: url.to_string(),
                    kind: ErrorKind::InvalidData,
                    message: format!("the server sent {have} bytes where {size} were announced"),
                });
            }
            _ => {}
        }
        progress.finish();
        Ok(Attempt::Done(have))
    }
}

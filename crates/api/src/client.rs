//! The client `vmnap` and the tests use: one request per connection on the daemon's unix
//! socket, answers decoded into the types of this crate.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::http;
use crate::{
    ApiError, GuestDetail, GuestStatus, LogFilter, Message, Record, Reloaded, Request, Response,
};

/// Failure to talk to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is not there or nobody listens.
    #[error("cannot connect to the vmnap daemon at {path} (is `vmnap run` running?)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed half-way.
    #[error("lost the connection to the vmnap daemon at {path}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The daemon's answer did not parse.
    #[error("the vmnap daemon at {path} answered something this vmnap does not understand")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The daemon refused or failed the request.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its `error`.
        message: String,
    },
}

/// How long a client waits for an answer; a wake under TCG can take seconds.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `vmnap reload` waits: a reload may wait minutes for guests it removes to wake.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// One HTTP exchange with the daemon on `socket`: the status and the body.
pub fn request(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), ClientError> {
    request_waiting(socket, method, target, body, CLIENT_TIMEOUT)
}

/// [`request`], waiting up to `timeout` for the answer.
pub fn request_waiting(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), ClientError> {
    let (mut reader, head) = open(socket, method, target, body, timeout)?;
    let body = http::read_response_body(&mut reader, &head).map_err(|source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    })?;
    Ok((head.status, body))
}

/// Sends a request and reads the response's head; the body is left in the reader.
fn open(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(BufReader<UnixStream>, http::ResponseHead), ClientError> {
    let path = socket.to_path_buf();
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: path.clone(),
        source,
    })?;
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    http::write_request(&mut stream, method, target, &[], body).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let head = http::read_response_head(&mut reader).map_err(io)?;
    Ok((reader, head))
}

/// `body` as a `T` if `status` is a success, else the daemon's refusal.
fn decode<T: for<'de> Deserialize<'de>>(
    socket: &Path,
    status: u16,
    body: &[u8],
) -> Result<T, ClientError> {
    let protocol = |source| ClientError::Protocol {
        path: socket.to_path_buf(),
        source,
    };
    if (200..300).contains(&status) {
        serde_json::from_slice(body).map_err(protocol)
    } else {
        let e: ApiError = serde_json::from_slice(body).map_err(protocol)?;
        Err(ClientError::Refused {
            status,
            message: e.error,
        })
    }
}

/// Sends one request to the daemon listening on `socket` and returns its answer; refusals
/// are [`Response::Error`].
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let action = |guest: &str, verb: &str| {
        let target = format!("/v1/guests/{guest}/{verb}");
        let (status, body) = self::request(socket, "POST", &target, None)?;
        decode::<Message>(socket, status, &body).map(|m| Response::Done { message: m.message })
    };
    let answer = match request {
        Request::Sleep { guest } => action(guest, "sleep"),
        Request::Wake { guest } => action(guest, "wake"),
        Request::Pin { guest } => action(guest, "pin"),
        Request::Unpin { guest } => action(guest, "unpin"),
        Request::Status => {
            let (status, body) = self::request(socket, "GET", "/v1/guests", None)?;
            decode(socket, status, &body).map(|guests| Response::Status { guests })
        }
    };
    match answer {
        Err(ClientError::Refused { message, .. }) => Ok(Response::Error { message }),
        other => other,
    }
}

/// One guest's detail.
pub fn guest(socket: &Path, name: &str) -> Result<GuestDetail, ClientError> {
    let (status, body) = request(socket, "GET", &format!("/v1/guests/{name}"), None)?;
    decode(socket, status, &body)
}

/// Every guest's status, in config order (`GET /v1/guests`).
pub fn status(socket: &Path) -> Result<Vec<GuestStatus>, ClientError> {
    let (status, body) = request(socket, "GET", "/v1/guests", None)?;
    decode(socket, status, &body)
}

/// Reads the config file again (`POST /v1/reload`), waiting up to [`RELOAD_TIMEOUT`].
pub fn reload(socket: &Path) -> Result<Reloaded, ClientError> {
    let (status, body) = request_waiting(socket, "POST", "/v1/reload", None, RELOAD_TIMEOUT)?;
    decode(socket, status, &body)
}

/// The daemon's log filter (`GET /v1/log`), or, given `filter`, sets it first
/// (`PUT /v1/log`); returns the filter now in force.
pub fn log_filter(socket: &Path, filter: Option<&str>) -> Result<LogFilter, ClientError> {
    let (status, body) = match filter {
        Some(f) => {
            let body = serde_json::to_vec(&LogFilter {
                filter: f.to_owned(),
            })
            .map_err(|source| ClientError::Protocol {
                path: socket.to_path_buf(),
                source,
            })?;
            request(socket, "PUT", "/v1/log", Some(&body))?
        }
        None => request(socket, "GET", "/v1/log", None)?,
    };
    decode(socket, status, &body)
}

/// Reads the daemon's events (of guest `guest` only, if given): the recent ones, then, with
/// `follow`, each as it happens; calls `each` on every one until it returns `false` or the
/// stream ends.
pub fn events(
    socket: &Path,
    follow: bool,
    guest: Option<&str>,
    mut each: impl FnMut(Record) -> bool,
) -> Result<(), ClientError> {
    let mut target = format!("/v1/events?follow={follow}");
    if let Some(g) = guest {
        target.push_str(&format!("&guest={g}"));
    }
    let (mut reader, head) = open(socket, "GET", &target, None, CLIENT_TIMEOUT)?;
    let io = |source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    };
    if head.status != 200 {
        let body = http::read_response_body(&mut reader, &head).map_err(io)?;
        return decode::<Record>(socket, head.status, &body).map(|_| ());
    }
    // A followed stream may be quiet for a long time.
    reader.get_ref().set_read_timeout(None).map_err(io)?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let record: Record =
            serde_json::from_str(&line).map_err(|source| ClientError::Protocol {
                path: socket.to_path_buf(),
                source,
            })?;
        if !each(record) {
            return Ok(());
        }
    }
}

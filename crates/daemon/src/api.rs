//! The control protocol between `vmnap` commands and the running daemon: one JSON request
//! per line on a unix socket, one JSON response line back.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Put a guest to sleep.
    Sleep {
        /// The guest's name.
        guest: String,
    },
    /// Wake a guest.
    Wake {
        /// The guest's name.
        guest: String,
    },
    /// Keep a guest awake however idle it is.
    Pin {
        /// The guest's name.
        guest: String,
    },
    /// Let a pinned guest sleep when idle again.
    Unpin {
        /// The guest's name.
        guest: String,
    },
    /// Every guest's state and counters.
    Status,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// Done; what happened, for people.
    Done {
        /// E.g. `web1 is asleep`.
        message: String,
    },
    /// Every guest.
    Status {
        /// One entry per guest, in config order.
        guests: Vec<GuestStatus>,
    },
    /// Refused or failed.
    Error {
        /// Why, naming the guest.
        message: String,
    },
}

/// One guest as `vmnap status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestStatus {
    /// Its name.
    pub name: String,
    /// `awake`, `sleeping`, `waking` or `falling-asleep`.
    pub state: String,
    /// The bridge it is on.
    pub bridge: String,
    /// Its backend.
    pub backend: String,
    /// Completed wakes.
    pub wakes: u64,
    /// Wakes that failed (each is retried).
    pub wake_failures: u64,
    /// Frames the surrogate answered in its name.
    pub answered_frames: u64,
    /// Frames held for it (all time).
    pub queued_frames: u64,
    /// Frames held for it now.
    pub queue_depth: u64,
    /// Frames replayed into it.
    pub replayed_frames: u64,
    /// Frames dropped by a policy.
    pub dropped_frames: u64,
    /// How long the last wake took, from the frame that caused it to the guest owning its
    /// address again, in milliseconds.
    pub last_wake_ms: Option<f64>,
    /// What caused the last wake.
    pub last_wake_cause: Option<String>,
    /// Seconds it has been asleep, if it is.
    pub asleep_for_s: Option<f64>,
    /// Seconds it has been idle, if it is awake and sleeps on its own.
    pub idle_for_s: Option<f64>,
    /// Pinned awake (`vmnap pin`).
    pub pinned: bool,
}

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
}

/// How long a client waits for an answer; a wake under TCG can take seconds.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request to the daemon listening on `socket` and returns its answer.
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let path = socket.to_path_buf();
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: path.clone(),
        source,
    })?;
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(request).expect("requests always serialize");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|source| ClientError::Protocol {
        path: path.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object_with_a_cmd() {
        let text = serde_json::to_string(&Request::Sleep {
            guest: "web1".into(),
        })
        .expect("serializes");
        assert_eq!(text, r#"{"cmd":"sleep","guest":"web1"}"#);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).expect("parses"),
            Request::Status
        );
    }
}

//! A blocking QMP client over a unix socket.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::wire::{self, Event, Greeting, LineBuffer, Message, ParseError};

/// How many unread events a [`Qmp`] keeps; past this the oldest are dropped.
pub const EVENT_QUEUE_LEN: usize = 256;

/// A failed QMP exchange. Every variant names the socket and the command (or `greeting`,
/// `qmp_capabilities`, `event NAME`) it was waiting for.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected to.
    #[error("Cannot connect to QMP socket {}", .path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing the command failed.
    #[error("Cannot send {command} to QMP socket {}", .path.display())]
    Send {
        /// The socket.
        path: PathBuf,
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading failed.
    #[error("Cannot read from QMP socket {} while waiting for {command}", .path.display())]
    Receive {
        /// The socket.
        path: PathBuf,
        /// What was awaited.
        command: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// QEMU closed the connection: it quit, or another client holds the socket.
    #[error("QEMU closed QMP socket {} while waiting for {command}", .path.display())]
    Eof {
        /// The socket.
        path: PathBuf,
        /// What was awaited.
        command: String,
    },
    /// Nothing came in time.
    #[error("No answer on QMP socket {} to {command} within {timeout:?}", .path.display())]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// What was awaited.
        command: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// QEMU sent something that is not a QMP message.
    #[error("Unreadable message on QMP socket {} while waiting for {command}", .path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was awaited.
        command: String,
        /// Why.
        #[source]
        source: ParseError,
    },
    /// QEMU answered the command with an error.
    #[error("QMP command {command} on {} failed: {class}: {desc}", .path.display())]
    Command {
        /// The socket.
        path: PathBuf,
        /// The command.
        command: String,
        /// QEMU's error class (`CommandNotFound`, `GenericError`).
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

impl QmpError {
    /// Whether the connection is gone (EOF or an I/O error): a new connection might work.
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            QmpError::Eof { .. } | QmpError::Send { .. } | QmpError::Receive { .. }
        )
    }
}

/// One QMP connection in command mode.
///
/// Events that arrive while waiting for an answer are kept (at most [`EVENT_QUEUE_LEN`],
/// oldest dropped first) for [`Qmp::events`] and [`Qmp::wait_event`].
#[derive(Debug)]
pub struct Qmp {
    stream: UnixStream,
    path: PathBuf,
    timeout: Duration,
    lines: LineBuffer,
    events: VecDeque<Event>,
    dropped_events: u64,
    next_id: u64,
    greeting: Greeting,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode (`qmp_capabilities`). `timeout`
    /// bounds each of these steps and, later, each command.
    ///
    /// QEMU serves one client per QMP socket at a time: while another holds it, the
    /// greeting does not come and this fails with [`QmpError::Timeout`].
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Qmp, QmpError> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).map_err(|source| QmpError::Connect {
            path: path.clone(),
            source,
        })?;
        let mut qmp = Qmp {
            stream,
            path,
            timeout,
            lines: LineBuffer::new(),
            events: VecDeque::new(),
            dropped_events: 0,
            next_id: 1,
            greeting: Greeting {
                version: None,
                package: String::new(),
                capabilities: Vec::new(),
            },
        };
        let deadline = Instant::now() + timeout;
        loop {
            match qmp.read_message("greeting", deadline, timeout)? {
                Message::Greeting(g) => {
                    qmp.greeting = g;
                    break;
                }
                Message::Event(e) => qmp.queue_event(e),
                other => {
                    tracing::debug!(path = %qmp.path.display(), ?other, "QMP message before the greeting ignored");
                }
            }
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// The greeting QEMU sent.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// The process at the other end of the socket: QEMU itself.
    pub fn peer(&self) -> std::io::Result<vmnap_host::process::Process> {
        vmnap_host::process::Process::of_peer(&self.stream)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long a command may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets how long a command may take.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs a command and returns its `return` member. A QMP `error` answer becomes
    /// [`QmpError::Command`]; events that arrive meanwhile are queued.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = wire::encode_command(command, arguments.as_ref(), id);
        self.stream.write_all(&line).map_err(|source| {
            if matches!(
                source.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                QmpError::Eof {
                    path: self.path.clone(),
                    command: command.to_owned(),
                }
            } else {
                QmpError::Send {
                    path: self.path.clone(),
                    command: command.to_owned(),
                    source,
                }
            }
        })?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.read_message(command, deadline, self.timeout)? {
                Message::Event(e) => self.queue_event(e),
                Message::Return { id: got, value } if got == Some(Value::from(id)) => {
                    return Ok(value)
                }
                Message::Error {
                    id: got,
                    class,
                    desc,
                } if got == Some(Value::from(id)) => {
                    return Err(QmpError::Command {
                        path: self.path.clone(),
                        command: command.to_owned(),
                        class,
                        desc,
                    })
                }
                // The answer to an earlier command that timed out, or one without an id.
                other => {
                    tracing::debug!(path = %self.path.display(), command, ?other, "stale QMP answer ignored");
                }
            }
        }
    }

    /// Takes the queued events, oldest first.
    pub fn events(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.events.drain(..)
    }

    /// How many events were dropped because the queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Returns the first event called `name`: an already queued one (removed from the
    /// queue), or the next to arrive within `timeout`. Other events stay queued.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Event, QmpError> {
        if let Some(pos) = self.events.iter().position(|e| e.name == name) {
            if let Some(e) = self.events.remove(pos) {
                return Ok(e);
            }
        }
        let what = format!("event {name}");
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_message(&what, deadline, timeout)? {
                Message::Event(e) if e.name == name => return Ok(e),
                Message::Event(e) => self.queue_event(e),
                other => {
                    tracing::debug!(path = %self.path.display(), ?other, "stale QMP answer ignored");
                }
            }
        }
    }

    fn queue_event(&mut self, event: Event) {
        if self.events.len() >= EVENT_QUEUE_LEN {
            self.events.pop_front();
            self.dropped_events += 1;
            tracing::warn!(path = %self.path.display(), "QMP event queue full: oldest event dropped");
        }
        tracing::trace!(path = %self.path.display(), event = %event.name, "QMP event");
        self.events.push_back(event);
    }

    fn read_message(
        &mut self,
        command: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Message, QmpError> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(line) = self.lines.next_line() {
                return line
                    .and_then(|line| wire::parse_message(&line))
                    .map_err(|source| QmpError::Protocol {
                        path: self.path.clone(),
                        command: command.to_owned(),
                        source,
                    });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timeout_error(command, timeout));
            }
            self.stream
                .set_read_timeout(Some(remaining))
                .map_err(|source| QmpError::Receive {
                    path: self.path.clone(),
                    command: command.to_owned(),
                    source,
                })?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(QmpError::Eof {
                        path: self.path.clone(),
                        command: command.to_owned(),
                    })
                }
                Ok(n) => self.lines.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(self.timeout_error(command, timeout));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(QmpError::Eof {
                        path: self.path.clone(),
                        command: command.to_owned(),
                    })
                }
                Err(source) => {
                    return Err(QmpError::Receive {
                        path: self.path.clone(),
                        command: command.to_owned(),
                        source,
                    })
                }
            }
        }
    }

    fn timeout_error(&self, command: &str, timeout: Duration) -> QmpError {
        QmpError::Timeout {
            path: self.path.clone(),
            command: command.to_owned(),
            timeout,
        }
    }
}

//! The QMP wire format without I/O: bytes in, typed messages out, and commands out as bytes.
//!
//! QEMU sends one JSON object per line (`\r\n`-terminated): a greeting on connect, then
//! `return` or `error` answers (carrying the `id` of the command, if it had one) and
//! asynchronous `event`s interleaved with them. Nothing here panics on any input.

use serde_json::{Map, Value};

/// The longest line accepted from QEMU. `query-qmp-schema` answers with about 200 KiB on one
/// line; anything near this limit is not QMP.
pub const MAX_LINE: usize = 16 << 20;

/// QEMU's version, from the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Micro version.
    pub micro: u64,
}

/// The first message on a QMP connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Greeting {
    /// QEMU's version, if the greeting carried a well-formed one.
    pub version: Option<Version>,
    /// The distribution's package string (`Debian 1:7.2+dfsg-7`), or empty.
    pub package: String,
    /// Capabilities offered (`oob`).
    pub capabilities: Vec<String>,
}

/// When QEMU emitted an event (seconds and microseconds since the Unix epoch; QEMU sends
/// -1 for both when its clock failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Seconds.
    pub seconds: i64,
    /// Microseconds.
    pub microseconds: i64,
}

/// An asynchronous event (`STOP`, `RESUME`, `MIGRATION`, `SHUTDOWN`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's name.
    pub name: String,
    /// Its `data` member, or `Null` when it has none.
    pub data: Value,
    /// Its timestamp, if well-formed.
    pub timestamp: Option<Timestamp>,
}

/// One message from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The greeting sent on connect.
    Greeting(Greeting),
    /// A command succeeded.
    Return {
        /// The command's `id`, echoed.
        id: Option<Value>,
        /// The `return` member.
        value: Value,
    },
    /// A command failed.
    Error {
        /// The command's `id`, echoed.
        id: Option<Value>,
        /// The error class (`CommandNotFound`, `GenericError`).
        class: String,
        /// The human-readable description.
        desc: String,
    },
    /// An asynchronous event.
    Event(Event),
}

/// Why a line is not a QMP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON.
    #[error("Not JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("Not a JSON object")]
    NotAnObject,
    /// An object with none of `QMP`, `return`, `error`, `event`.
    #[error("An object with none of the members QMP, return, error or event")]
    Unknown,
    /// A known kind of message with a member of the wrong type.
    #[error("Member {0} is missing or of the wrong type")]
    BadMember(&'static str),
    /// A line longer than [`MAX_LINE`].
    #[error("A line longer than {MAX_LINE} bytes")]
    TooLong,
}

/// Parses one line (with or without its line end).
pub fn parse_message(line: &[u8]) -> Result<Message, ParseError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| ParseError::Json(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(ParseError::NotAnObject);
    };
    if let Some(greeting) = obj.remove("QMP") {
        return parse_greeting(greeting).map(Message::Greeting);
    }
    let id = obj.remove("id");
    if let Some(value) = obj.remove("return") {
        return Ok(Message::Return { id, value });
    }
    if let Some(error) = obj.remove("error") {
        let Value::Object(mut error) = error else {
            return Err(ParseError::BadMember("error"));
        };
        let class = take_string(&mut error, "class").ok_or(ParseError::BadMember("class"))?;
        // QEMU always sends a description; an empty one is still an error.
        let desc = take_string(&mut error, "desc").unwrap_or_default();
        return Ok(Message::Error { id, class, desc });
    }
    if let Some(name) = obj.remove("event") {
        let Value::String(name) = name else {
            return Err(ParseError::BadMember("event"));
        };
        let data = obj.remove("data").unwrap_or(Value::Null);
        let timestamp = obj.remove("timestamp").and_then(|t| {
            Some(Timestamp {
                seconds: t.get("seconds")?.as_i64()?,
                microseconds: t.get("microseconds")?.as_i64()?,
            })
        });
        return Ok(Message::Event(Event {
            name,
            data,
            timestamp,
        }));
    }
    Err(ParseError::Unknown)
}

fn take_string(obj: &mut Map<String, Value>, key: &str) -> Option<String> {
    match obj.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn parse_greeting(greeting: Value) -> Result<Greeting, ParseError> {
    let Value::Object(mut greeting) = greeting else {
        return Err(ParseError::BadMember("QMP"));
    };
    let version = greeting.get("version");
    let number = |key: &str| version?.get("qemu")?.get(key)?.as_u64();
    let version_numbers = match (number("major"), number("minor"), number("micro")) {
        (Some(major), Some(minor), Some(micro)) => Some(Version {
            major,
            minor,
            micro,
        }),
        _ => None,
    };
    let package = version
        .and_then(|v| v.get("package"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let capabilities = match greeting.remove("capabilities") {
        Some(Value::Array(caps)) => caps
            .into_iter()
            .filter_map(|c| match c {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Greeting {
        version: version_numbers,
        package,
        capabilities,
    })
}

/// Encodes a command with its `id` as one line, ready to write.
pub fn encode_command(command: &str, arguments: Option<&Value>, id: u64) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("execute".into(), Value::String(command.to_owned()));
    if let Some(arguments) = arguments {
        obj.insert("arguments".into(), arguments.clone());
    }
    obj.insert("id".into(), Value::from(id));
    let mut line = Value::Object(obj).to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Splits a byte stream into lines. Bytes go in as they are read; whole lines come out.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already searched for a line end.
    scanned: usize,
}

impl LineBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole line without its `\n` (a `\r` before it stays; JSON ignores it), or
    /// `None` until one is complete. Empty lines are skipped. A line that grows past
    /// [`MAX_LINE`] is an error, and the buffer is emptied.
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, ParseError>> {
        loop {
            match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    let end = self.scanned + pos;
                    let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                    self.scanned = 0;
                    line.pop();
                    if line.len() > MAX_LINE {
                        return Some(Err(ParseError::TooLong));
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(Ok(line));
                }
                None => {
                    self.scanned = self.buf.len();
                    if self.buf.len() > MAX_LINE {
                        self.buf.clear();
                        self.scanned = 0;
                        return Some(Err(ParseError::TooLong));
                    }
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    // Captured from QEMU 7.2.22 (Debian 12).
    const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": [\"oob\"]}}\r\n";
    const STATUS: &[u8] =
        b"{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}\r\n";
    const STOP_EVENT: &[u8] =
        b"{\"timestamp\": {\"seconds\": 1795671355, \"microseconds\": 795493}, \"event\": \"STOP\"}\r\n";
    const EMPTY_RETURN_WITH_ID: &[u8] = b"{\"return\": {}, \"id\": 1}\r\n";
    const NOT_FOUND: &[u8] = b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command bogus has not been found\"}}\r\n";

    #[test]
    fn greeting_gives_version_package_and_capabilities() {
        let Ok(Message::Greeting(g)) = parse_message(GREETING) else {
            panic!("not a greeting");
        };
        assert_eq!(
            g.version,
            Some(Version {
                major: 7,
                minor: 2,
                micro: 22
            })
        );
        assert_eq!(g.package, "Debian 1:7.2+dfsg-7+deb12u18+b3");
        assert_eq!(g.capabilities, ["oob"]);
    }

    #[test]
    fn greeting_without_version_is_still_a_greeting() {
        let m = parse_message(b"{\"QMP\": {}}").expect("parses");
        assert_eq!(
            m,
            Message::Greeting(Greeting {
                version: None,
                package: String::new(),
                capabilities: vec![]
            })
        );
    }

    #[test]
    fn return_carries_value_and_id() {
        assert_eq!(
            parse_message(STATUS),
            Ok(Message::Return {
                id: None,
                value: json!({"status": "running", "singlestep": false, "running": true})
            })
        );
        assert_eq!(
            parse_message(EMPTY_RETURN_WITH_ID),
            Ok(Message::Return {
                id: Some(json!(1)),
                value: json!({})
            })
        );
    }

    #[test]
    fn error_carries_class_and_desc() {
        assert_eq!(
            parse_message(NOT_FOUND),
            Ok(Message::Error {
                id: None,
                class: "CommandNotFound".into(),
                desc: "The command bogus has not been found".into()
            })
        );
    }

    #[test]
    fn event_carries_name_timestamp_and_null_data() {
        assert_eq!(
            parse_message(STOP_EVENT),
            Ok(Message::Event(Event {
                name: "STOP".into(),
                data: Value::Null,
                timestamp: Some(Timestamp {
                    seconds: 1_795_671_355,
                    microseconds: 795_493
                })
            }))
        );
        let m = parse_message(br#"{"event":"MIGRATION","data":{"status":"completed"}}"#);
        let Ok(Message::Event(e)) = m else {
            panic!("not an event: {m:?}");
        };
        assert_eq!(e.data, json!({"status": "completed"}));
        assert_eq!(e.timestamp, None);
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(matches!(parse_message(b"{"), Err(ParseError::Json(_))));
        assert!(matches!(parse_message(b""), Err(ParseError::Json(_))));
        assert_eq!(parse_message(b"[1]"), Err(ParseError::NotAnObject));
        assert_eq!(parse_message(b"{\"x\":1}"), Err(ParseError::Unknown));
        assert_eq!(
            parse_message(b"{\"error\":\"x\"}"),
            Err(ParseError::BadMember("error"))
        );
        assert_eq!(
            parse_message(b"{\"error\":{\"desc\":\"x\"}}"),
            Err(ParseError::BadMember("class"))
        );
        assert_eq!(
            parse_message(b"{\"event\":3}"),
            Err(ParseError::BadMember("event"))
        );
        assert_eq!(
            parse_message(b"{\"QMP\":3}"),
            Err(ParseError::BadMember("QMP"))
        );
        // Deep nesting hits serde_json's recursion limit instead of the stack's.
        let deep = [b"[".repeat(100_000), b"]".repeat(100_000)].concat();
        assert!(matches!(parse_message(&deep), Err(ParseError::Json(_))));
    }

    #[test]
    fn command_is_one_line_with_id_and_arguments() {
        let line = encode_command("migrate", Some(&json!({"uri": "exec:cat > f"})), 7);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(
            v,
            json!({"execute": "migrate", "arguments": {"uri": "exec:cat > f"}, "id": 7})
        );
        let v: Value = serde_json::from_slice(&encode_command("stop", None, 1)).expect("json");
        assert_eq!(v, json!({"execute": "stop", "id": 1}));
    }

    #[test]
    fn lines_come_out_whole_whatever_the_read_boundaries() {
        let stream = [GREETING, b"\r\n", STATUS, STOP_EVENT].concat();
        for chunk in 1..stream.len() {
            let mut lb = LineBuffer::new();
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                lb.push(piece);
                while let Some(line) = lb.next_line() {
                    out.push(parse_message(&line.expect("short line")).expect("parses"));
                }
            }
            assert_eq!(out.len(), 3, "chunk size {chunk}");
            assert!(matches!(out[0], Message::Greeting(_)));
            assert!(matches!(out[2], Message::Event(_)));
        }
    }

    #[test]
    fn an_endless_line_is_refused_and_the_buffer_emptied() {
        let mut lb = LineBuffer::new();
        lb.push(&vec![b'x'; MAX_LINE + 1]);
        assert_eq!(lb.next_line(), Some(Err(ParseError::TooLong)));
        lb.push(STATUS);
        assert!(matches!(lb.next_line(), Some(Ok(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_message(&bytes);
            let mut lb = LineBuffer::new();
            lb.push(&bytes);
            while let Some(line) = lb.next_line() {
                if let Ok(line) = line {
                    let _ = parse_message(&line);
                }
            }
        }

        #[test]
        fn arbitrary_json_never_panics(s in r#"\{("(QMP|return|error|event|id|data|class|desc|timestamp)": ?(\{\}|\[\]|"[a-z]*"|-?[0-9]{1,3}|null|\{"[a-z]+": ?[0-9a-z"]{0,4}\}),? ?){0,4}\}"#) {
            let _ = parse_message(s.as_bytes());
        }
    }
}

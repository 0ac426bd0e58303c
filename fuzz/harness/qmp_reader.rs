// The harness of the `qmp_reader` fuzz target, shared with `crates/qmp/tests/fuzz_seeds.rs`
// (both `include!` this file).
//
// Input: one byte, the size of the pieces the stream is read in (0: all at once), then what
// QEMU sends. The pieces go into a `LineBuffer` and every line that comes out goes through
// `parse_message`.
//
// Invariants checked besides "does not panic":
// - the lines that come out are the stream's lines, in order, without their `\n`, the blank
//   ones left out, whatever the pieces; none is longer than `MAX_LINE`;
// - what is left of an unfinished line comes out once its `\n` arrives, and then the buffer
//   holds nothing: a line pushed next comes out alone;
// - `parse_message` agrees with the JSON value serde_json reads from the line: a greeting
//   exactly when it has `QMP`, else an answer when it has `return`, else an error when it
//   has `error`, else an event when it has `event`, with the members carried over as they
//   were; a refusal for what is not JSON, not an object, or none of these.
// `overlong` (run by the seed tests only: it pushes 16 MiB) checks that a line past
// `MAX_LINE` is refused and leaves the buffer empty.

use serde_json::{Map, Value};
use vmnap_qmp::wire::{parse_message, LineBuffer, Message, ParseError, MAX_LINE};

/// A line QEMU sends, pushed after the input to see that the buffer holds nothing else.
const PROBE: &[u8] = b"{\"return\": {}, \"id\": 1}\r";

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = match piece {
        0 => stream.len().max(1),
        n => usize::from(n),
    };
    let mut reader = LineBuffer::new();
    let mut lines = Vec::new();
    for chunk in stream.chunks(piece) {
        reader.push(chunk);
        drain(&mut reader, &mut lines);
    }
    let mut want: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let tail = want.pop().expect("a split gives at least one piece");
    want.retain(|line| !blank(line));
    assert_eq!(lines, want, "the lines that came out are not the stream's");

    reader.push(b"\n");
    let mut last = Vec::new();
    drain(&mut reader, &mut last);
    let want: &[&[u8]] = if blank(tail) { &[] } else { &[tail] };
    assert_eq!(last, want, "the unfinished line did not come out whole");
    reader.push(PROBE);
    reader.push(b"\n");
    assert_eq!(
        reader.next_line(),
        Some(Ok(PROBE.to_vec())),
        "left in the buffer"
    );
    assert_eq!(reader.next_line(), None);
}

/// `data` as for `run`, then a line longer than `MAX_LINE`: refused, after which the buffer
/// is empty.
#[allow(dead_code)] // The fuzz target leaves it to the seed tests.
pub fn overlong(data: &[u8]) {
    let mut reader = LineBuffer::new();
    reader.push(data.get(1..).unwrap_or_default());
    while reader.next_line().is_some() {}
    reader.push(&vec![b'x'; MAX_LINE + 1]);
    assert_eq!(reader.next_line(), Some(Err(ParseError::TooLong)));
    assert_eq!(reader.next_line(), None);
    reader.push(b"\n");
    reader.push(PROBE);
    reader.push(b"\n");
    assert_eq!(
        reader.next_line(),
        Some(Ok(PROBE.to_vec())),
        "left in the buffer"
    );
}

fn blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Takes every whole line out of `reader`, checking each.
fn drain(reader: &mut LineBuffer, into: &mut Vec<Vec<u8>>) {
    while let Some(line) = reader.next_line() {
        let line = line.expect("lines shorter than MAX_LINE are not refused");
        assert!(line.len() <= MAX_LINE && !line.contains(&b'\n') && !blank(&line));
        message(&line);
        into.push(line);
    }
}

/// Checks `parse_message` on `line` against serde_json's value of it.
fn message(line: &[u8]) {
    let parsed = parse_message(line);
    let obj = match serde_json::from_slice::<Value>(line) {
        Err(_) => {
            assert!(matches!(parsed, Err(ParseError::Json(ref m)) if !m.is_empty()));
            return;
        }
        Ok(Value::Object(obj)) => obj,
        Ok(_) => {
            assert_eq!(parsed, Err(ParseError::NotAnObject));
            return;
        }
    };
    let has = |key: &str| obj.contains_key(key);
    let kind = ["QMP", "return", "error", "event"]
        .into_iter()
        .find(|k| has(k));
    let id = obj.get("id");
    match (kind, parsed) {
        (Some("QMP"), Ok(Message::Greeting(g))) => {
            let qemu = &obj["QMP"]["version"]["qemu"];
            let number = |k: &str| qemu[k].as_u64();
            match g.version {
                Some(v) => assert_eq!(
                    [Some(v.major), Some(v.minor), Some(v.micro)],
                    [number("major"), number("minor"), number("micro")]
                ),
                None => {
                    assert!([number("major"), number("minor"), number("micro")].contains(&None))
                }
            }
            let caps = obj["QMP"]["capabilities"].as_array();
            assert!(g.capabilities.len() <= caps.map_or(0, Vec::len));
        }
        (Some("QMP"), Err(ParseError::BadMember("QMP"))) => assert!(!obj["QMP"].is_object()),
        (Some("return"), Ok(Message::Return { id: got, value })) => {
            assert_eq!((got.as_ref(), Some(&value)), (id, obj.get("return")));
        }
        (
            Some("error"),
            Ok(Message::Error {
                id: got,
                class,
                desc,
            }),
        ) => {
            assert_eq!(got.as_ref(), id);
            assert_eq!(obj["error"]["class"].as_str(), Some(class.as_str()));
            assert_eq!(obj["error"]["desc"].as_str().unwrap_or_default(), desc);
        }
        (Some("error"), Err(ParseError::BadMember("error"))) => {
            assert!(!obj["error"].is_object());
        }
        (Some("error"), Err(ParseError::BadMember("class"))) => {
            assert!(!obj["error"]["class"].is_string());
        }
        (Some("event"), Ok(Message::Event(e))) => {
            assert_eq!(obj["event"].as_str(), Some(e.name.as_str()));
            assert_eq!(obj.get("data").unwrap_or(&Value::Null), &e.data);
            let stamp = |k: &str| obj.get("timestamp").and_then(|t| t.get(k)?.as_i64());
            assert_eq!(
                e.timestamp.map(|t| (t.seconds, t.microseconds)),
                stamp("seconds").zip(stamp("microseconds"))
            );
        }
        (Some("event"), Err(ParseError::BadMember("event"))) => {
            assert!(!obj["event"].is_string());
        }
        (None, Err(ParseError::Unknown)) => {}
        (kind, parsed) => panic!("{kind:?} parsed as {parsed:?}: {}", show(&obj)),
    }
}

fn show(obj: &Map<String, Value>) -> String {
    Value::Object(obj.clone()).to_string()
}

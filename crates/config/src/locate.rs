//! Names the key behind a byte offset, for the errors `toml` and serde report with only a span
//! (unknown key, wrong type, missing key).

use toml_edit::{Document, Item, TableLike, Value};

/// The path of the deepest key or array element whose text contains byte `offset` of `text`,
/// as `guest[1].wake_on[0]`; `None` when the text does not parse or the offset is in no key.
pub(crate) fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = Document::parse(text).ok()?;
    let mut path = Vec::new();
    in_table(doc.as_table(), offset, &mut path);
    if path.is_empty() {
        None
    } else {
        Some(render(&path))
    }
}

/// Drops the last segment of a rendered path (`guest[1].x` → `guest[1]`, `guest[1]` →
/// `guest`, `api` → `None`).
pub(crate) fn parent(path: &str) -> Option<String> {
    let cut = path.rfind(['.', '['])?;
    Some(path[..cut].to_string())
}

enum Segment {
    Key(String),
    Index(usize),
}

fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn contains(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end)
}

/// Pushes onto `path` the deepest key under `table` that contains `offset`; returns whether
/// anything was found.
fn in_table(table: &dyn TableLike, offset: usize, path: &mut Vec<Segment>) -> bool {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        path.push(Segment::Key(name.to_string()));
        if in_item(item, offset, path) || contains(key.span(), offset) {
            return true;
        }
        path.pop();
    }
    false
}

/// Whether `item` (already on `path`) contains `offset`; pushes any deeper segments.
fn in_item(item: &Item, offset: usize, path: &mut Vec<Segment>) -> bool {
    match item {
        Item::None => false,
        Item::Value(value) => in_value(value, offset, path),
        Item::Table(table) => in_table(table, offset, path) || contains(table.span(), offset),
        Item::ArrayOfTables(tables) => {
            for (i, table) in tables.iter().enumerate() {
                path.push(Segment::Index(i));
                if in_table(table, offset, path) || contains(table.span(), offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
    }
}

fn in_value(value: &Value, offset: usize, path: &mut Vec<Segment>) -> bool {
    match value {
        Value::Array(array) => {
            for (i, element) in array.iter().enumerate() {
                path.push(Segment::Index(i));
                if in_value(element, offset, path) {
                    return true;
                }
                path.pop();
            }
            contains(array.span(), offset)
        }
        Value::InlineTable(table) => {
            in_table(table, offset, path) || contains(table.span(), offset)
        }
        _ => contains(value.span(), offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, needle: &str) -> Option<String> {
        key_at(text, text.find(needle).unwrap())
    }

    #[test]
    fn names_keys_tables_and_elements() {
        let text = "[api]\nsocket = \"s\"\n\n[[guest]]\nname = \"a\"\n\n[[guest]]\nname = \"b\"\nwake_on = [\"tcp/1\", \"zz\"]\nx = { y = 1 }\n";
        assert_eq!(at(text, "socket").as_deref(), Some("api.socket"));
        assert_eq!(at(text, "\"s\"").as_deref(), Some("api.socket"));
        assert_eq!(at(text, "\"b\"").as_deref(), Some("guest[1].name"));
        assert_eq!(at(text, "\"zz\"").as_deref(), Some("guest[1].wake_on[1]"));
        assert_eq!(at(text, "y =").as_deref(), Some("guest[1].x.y"));
        assert_eq!(
            at(text, "[[guest]]\nname = \"b\"").as_deref(),
            Some("guest[1]")
        );
    }

    #[test]
    fn nothing_for_bad_toml_or_blank_space() {
        assert_eq!(key_at("a = ", 0), None);
        assert_eq!(key_at("\n\na = 1", 0), None);
    }

    #[test]
    fn parent_drops_the_last_segment() {
        assert_eq!(parent("guest[1].x").as_deref(), Some("guest[1]"));
        assert_eq!(parent("guest[1]").as_deref(), Some("guest"));
        assert_eq!(parent("api"), None);
    }
}

//! Where a key path is written in the file: the line a config error points at.
//!
//! Errors are found on the typed config and named by their key path
//! (`route[0].rate_limits[0].rate`); toml_edit's spans then give the line of that key,
//! or of the nearest enclosing table when the key is missing (`route[1].name:
//! missing` points at the `[[route]]` header).

use std::ops::Range;

use toml_edit::{Array, ArrayOfTables, ImDocument, InlineTable, Item, Table, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// `.name` (or the leading `name`).
    Key(String),
    /// `[i]`.
    Index(usize),
}

/// Splits `route[0].rate_limits[1].rate` into its steps; `None` for text that is not a
/// key path, such as `(file)`.
pub(crate) fn steps(path: &str) -> Option<Vec<Step>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if name.is_empty() || name.starts_with('(') {
            return None;
        }
        out.push(Step::Key(name.to_string()));
        while !rest.is_empty() {
            let (index, after) = rest.split_once(']')?;
            out.push(Step::Index(index.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(out)
}

/// The parsed file, kept for looking lines up.
pub(crate) struct Located<'a> {
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

enum Node<'a> {
    Table(&'a Table),
    Inline(&'a InlineTable),
    Tables(&'a ArrayOfTables),
    Array(&'a Array),
    Leaf,
}

impl<'a> Node<'a> {
    fn of_item(item: &'a Item) -> Self {
        match item {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(v) => Node::of_value(v),
            Item::None => Node::Leaf,
        }
    }

    fn of_value(v: &'a Value) -> Self {
        match v {
            Value::InlineTable(t) => Node::Inline(t),
            Value::Array(a) => Node::Array(a),
            _ => Node::Leaf,
        }
    }
}

impl<'a> Located<'a> {
    /// Parses `text` for spans (a file that does not parse has no lines to give).
    pub(crate) fn new(text: &'a str) -> Self {
        Located {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// The 1-based line of `path`, or of its nearest written ancestor.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
        let span = self.span_of(&steps(path)?)?;
        Some(line_at(self.text, span.start))
    }

    fn span_of(&self, steps: &[Step]) -> Option<Range<usize>> {
        let mut node = Node::Table(self.doc.as_ref()?.as_table());
        let mut best = None;
        for step in steps {
            let (span, next) = match (node, step) {
                (Node::Table(t), Step::Key(k)) => {
                    let Some((key, item)) = t.get_key_value(k) else {
                        break;
                    };
                    (key.span().or_else(|| item.span()), Node::of_item(item))
                }
                (Node::Inline(t), Step::Key(k)) => {
                    let Some((key, item)) = t.get_key_value(k) else {
                        break;
                    };
                    (key.span().or_else(|| item.span()), Node::of_item(item))
                }
                (Node::Tables(a), Step::Index(i)) => {
                    let Some(t) = a.get(*i) else { break };
                    (t.span(), Node::Table(t))
                }
                (Node::Array(a), Step::Index(i)) => {
                    let Some(v) = a.get(*i) else { break };
                    (v.span(), Node::of_value(v))
                }
                _ => break,
            };
            best = span.or(best);
            node = next;
        }
        best
    }
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_path_splits_into_keys_and_indices() {
        assert_eq!(
            steps("route[0].rate_limits[12].rate").unwrap(),
            vec![
                Step::Key("route".into()),
                Step::Index(0),
                Step::Key("rate_limits".into()),
                Step::Index(12),
                Step::Key("rate".into()),
            ]
        );
        assert_eq!(steps("(file)"), None);
    }

    #[test]
    fn keys_in_tables_arrays_of_tables_and_inline_tables_have_their_line() {
        let text = "[server]\nlisten = \"x\"\n\n[[route]]\nname = \"a\"\n\n[[route]]\nrate_limits = [\n  { rate = \"5/s\" },\n  { rate = \"oops\" },\n]\n";
        let l = Located::new(text);
        assert_eq!(l.line_of("server.listen"), Some(2));
        assert_eq!(l.line_of("route[0].name"), Some(5));
        assert_eq!(l.line_of("route[1].rate_limits[1].rate"), Some(10));
        // Missing: the nearest written ancestor, the second [[route]] header.
        assert_eq!(l.line_of("route[1].name"), Some(7));
    }
}

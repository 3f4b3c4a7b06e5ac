//! The parsed document and the problems found in it: byte spans turned into lines and columns,
//! field paths, and deserialization of one table at a time, so that a mistake in one table
//! does not hide the mistakes in the others.

use super::problem::{Location, Problem, ProblemCode};
use serde::de::DeserializeOwned;
use std::fmt;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Where a setting is, as a path from the document's root. Shown as
/// `handles.API.http.destinations[0]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    /// The document itself.
    pub(crate) fn root() -> Self {
        FieldPath::default()
    }

    /// The key `k` of this table; `k` may hold any character.
    pub(crate) fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_owned()));
        p
    }

    /// Element `i` of this array.
    pub(crate) fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// A path below this one written as bare keys and indexes (`auth.token`,
    /// `destinations[0].methods`); `""` is this path. Keys holding `.` or `[` go through
    /// [`FieldPath::key`].
    pub(crate) fn join(&self, rel: &str) -> Self {
        let mut p = self.clone();
        for part in rel.split('.').filter(|s| !s.is_empty()) {
            match part.split_once('[') {
                Some((k, i)) => {
                    p.0.push(Seg::Key(k.to_owned()));
                    if let Some(i) = i.strip_suffix(']').and_then(|i| i.parse().ok()) {
                        p.0.push(Seg::Index(i));
                    }
                }
                None => p.0.push(Seg::Key(part.to_owned())),
            }
        }
        p
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The configuration text, parsed with spans.
pub(crate) struct Source<'t> {
    text: &'t str,
    root: Spanned<DeValue<'t>>,
}

impl<'t> Source<'t> {
    /// Parses `text` as TOML, or returns every syntax error the parser found.
    pub(crate) fn parse(text: &'t str) -> Result<Source<'t>, Vec<Problem>> {
        let (root, errors) = DeTable::parse_recoverable(text);
        let src = Source { text, root: Spanned::new(root.span(), DeValue::Table(root.into_inner())) };
        if errors.is_empty() {
            return Ok(src);
        }
        let problems = errors
            .iter()
            .map(|e| {
                let code = match ProblemCode::of_parser_message(e.message()) {
                    ProblemCode::DuplicateKey => ProblemCode::DuplicateKey,
                    _ => ProblemCode::TomlSyntax,
                };
                Problem::new(code, "", e.message(), e.span().map(|s| src.location(s.start)))
            })
            .collect();
        Err(problems)
    }

    /// The whole document, as a table value.
    pub(crate) fn document(&self) -> &Spanned<DeValue<'t>> {
        &self.root
    }

    /// A top-level key's value.
    pub(crate) fn section(&self, name: &str) -> Option<&Spanned<DeValue<'t>>> {
        get(self.root.get_ref(), name)
    }

    /// Line and column of byte offset `pos`.
    pub(crate) fn location(&self, pos: usize) -> Location {
        let mut pos = pos.min(self.text.len());
        while !self.text.is_char_boundary(pos) {
            pos -= 1;
        }
        let before = &self.text[..pos];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location { line: before.matches('\n').count() + 1, column: before[line_start..].chars().count() + 1 }
    }

    /// Where `path` is written: the deepest key or array element of it present in the file
    /// (a table's header, a key of a value), or `None` when not even its first key is.
    fn locate(&self, path: &FieldPath) -> Option<Location> {
        let mut cur = self.root.get_ref();
        let mut found = None;
        for seg in &path.0 {
            let next = match (seg, cur) {
                (Seg::Key(k), DeValue::Table(t)) => t.iter().find(|(key, _)| key.get_ref() == k).map(|(key, v)| (key.span(), v)),
                (Seg::Index(i), DeValue::Array(a)) => a.get(*i).map(|v| (v.span(), v)),
                _ => None,
            };
            let Some((span, v)) = next else { break };
            found = Some(span.start);
            cur = v.get_ref();
        }
        found.map(|p| self.location(p))
    }
}

/// The value of key `name` in `table`, if `table` is a table that has it.
pub(crate) fn get<'a, 't>(table: &'a DeValue<'t>, name: &str) -> Option<&'a Spanned<DeValue<'t>>> {
    match table {
        DeValue::Table(t) => t.iter().find(|(k, _)| k.get_ref() == name).map(|(_, v)| v),
        _ => None,
    }
}

/// The problems found so far in one [`Source`].
pub(crate) struct Report<'s, 't> {
    src: &'s Source<'t>,
    problems: Vec<Problem>,
}

impl<'s, 't> Report<'s, 't> {
    /// An empty report on `src`.
    pub(crate) fn new(src: &'s Source<'t>) -> Self {
        Report { src, problems: Vec::new() }
    }

    /// How many problems were found so far; a validator compares it before and after.
    pub(crate) fn count(&self) -> usize {
        self.problems.len()
    }

    /// Records a problem with the setting at `at`, located where the file writes it.
    pub(crate) fn problem(&mut self, at: &FieldPath, code: ProblemCode, message: impl AsRef<str>) {
        let location = self.src.locate(at);
        self.problems.push(Problem::new(code, at.to_string(), message.as_ref(), location));
    }

    /// Every problem, in file order (those with no known place last, in the order found).
    pub(crate) fn into_problems(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| p.location.map_or((usize::MAX, usize::MAX), |l| (l.line, l.column)));
        self.problems
    }

    /// The entries of the table at `at`, or none (and a problem) when the value is no table.
    pub(crate) fn entries(
        &mut self,
        at: &FieldPath,
        value: Option<&'s Spanned<DeValue<'t>>>,
    ) -> Vec<(&'s str, &'s Spanned<DeValue<'t>>)> {
        match value.map(Spanned::get_ref) {
            None => Vec::new(),
            Some(DeValue::Table(t)) => t.iter().map(|(k, v)| (k.get_ref().as_ref(), v)).collect(),
            Some(other) => {
                self.problem(at, ProblemCode::WrongType, format!("invalid type: {}, expected a table", other.type_str()));
                Vec::new()
            }
        }
    }

    /// Deserializes the value at `at` as `T`, or records every problem of its shape and returns
    /// `None`. Nothing of a table with a wrong key or value is returned, so that no later
    /// check runs on a default that stands in for what the file says.
    pub(crate) fn de<T: DeserializeOwned>(&mut self, at: &FieldPath, value: &Spanned<DeValue<'t>>) -> Option<T> {
        let (t, clean) = self.de_each(at, value);
        t.filter(|_| clean)
    }

    /// As [`Report::de`], but returns what is left of the table once the keys in error are
    /// taken out, when that still deserializes; for tables whose other keys are checked on
    /// their own (a handle's sub-tables, an agent's grants).
    pub(crate) fn de_lenient<T: DeserializeOwned>(&mut self, at: &FieldPath, value: &Spanned<DeValue<'t>>) -> Option<T> {
        self.de_each(at, value).0
    }

    /// Deserializes again and again, taking out the key each error is in, so that one pass
    /// reports every unknown key and every value of the wrong type in the table. Returns the
    /// value, if one came out, and whether it came out the first time.
    fn de_each<T: DeserializeOwned>(&mut self, at: &FieldPath, value: &Spanned<DeValue<'t>>) -> (Option<T>, bool) {
        let mut value = value.clone();
        let mut removed: Vec<String> = Vec::new();
        loop {
            let err = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(t) => return (Some(t), removed.is_empty()),
                Err(e) => e,
            };
            let message = err.message().trim();
            let code = ProblemCode::of_parser_message(message);
            if code == ProblemCode::MissingKey && removed.iter().any(|k| message.contains(&format!("`{k}`"))) {
                // Absent only because it was taken out after its own problem was reported.
                return (None, false);
            }
            let span = err.span().unwrap_or_else(|| value.span());
            let rel = if code == ProblemCode::MissingKey { Vec::new() } else { path_at(value.get_ref(), span.start) };
            let field = FieldPath(at.0.iter().cloned().chain(rel.iter().cloned()).collect());
            self.problems.push(Problem::new(code, field.to_string(), message, Some(self.src.location(span.start))));
            match (rel.first(), value.get_mut()) {
                (Some(Seg::Key(k)), DeValue::Table(t)) if !removed.contains(k) => {
                    t.remove(k.as_str());
                    removed.push(k.clone());
                }
                _ => return (None, false),
            }
        }
    }
}

/// The path, below `value`, of the innermost key or element whose key or value holds byte
/// `pos`. A table written as `[a.b]` spans its header only, so its body is searched too.
fn path_at(value: &DeValue<'_>, pos: usize) -> Vec<Seg> {
    let mut out = Vec::new();
    find(value, pos, &mut out);
    out
}

/// A key of a table or an element of an array, for [`find`].
struct Child<'a, 't> {
    seg: Seg,
    key: Option<std::ops::Range<usize>>,
    value: &'a Spanned<DeValue<'t>>,
}

/// Appends to `out` the path to `pos` below `value`; false when `pos` is not below it.
fn find(value: &DeValue<'_>, pos: usize, out: &mut Vec<Seg>) -> bool {
    let children: Vec<Child<'_, '_>> = match value {
        DeValue::Table(t) => t.iter().map(|(k, v)| Child { seg: Seg::Key(k.get_ref().to_string()), key: Some(k.span()), value: v }).collect(),
        DeValue::Array(a) => a.iter().enumerate().map(|(i, v)| Child { seg: Seg::Index(i), key: None, value: v }).collect(),
        _ => return false,
    };
    // First a child whose own text holds `pos`, then one whose body (a `[table]`) does.
    if let Some(c) = children.iter().find(|c| c.key.as_ref().is_some_and(|k| k.contains(&pos)) || c.value.span().contains(&pos)) {
        out.push(c.seg.clone());
        find(c.value.get_ref(), pos, out);
        return true;
    }
    for c in children {
        out.push(c.seg);
        if find(c.value.get_ref(), pos, out) {
            return true;
        }
        out.pop();
    }
    false
}

//! What a reload did, key by key. Each component takes its previous self and its new
//! config and returns the new self with a [`Changes`]: every changed key with its
//! [`Outcome`], and what became of the state the component carries (pools, buckets,
//! lines, cached pages). `POST /admin/reload` and the log print them; nothing is
//! silently ignored.
//!
//! Keys are written as in the file, with the component's name in between:
//! `server.max_connections`, `upstream.shop.connect_timeout`,
//! `route.checkout.rate_limits.per-ip.rate`, `waiting_room.sale.active_users`. A name
//! that is not a bare TOML key is quoted: `upstream."shop.example".servers`.

use std::fmt;

/// What a reload did with one changed key, or with the state a component carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// In force for the next request.
    Applied,
    /// In force for connections accepted from now on; open ones keep theirs.
    NewConnections,
    /// Read once at start: restart (or upgrade the binary) to apply.
    Restart,
    /// New in the file (a route, upstream, limit or room): in force for the next request.
    Added,
    /// Gone from the file: no request meets it any more.
    Removed,
    /// State carried over as it was, e.g. "connection pool kept": the reload cost the
    /// origin and the visitors nothing.
    Kept(&'static str),
    /// State started afresh, e.g. "connection pool rebuilt", "buckets reset", "cache
    /// emptied": expect new origin connections, fresh bursts or cache misses.
    Reset(&'static str),
    /// The running value stays; the text says why and what to do.
    NotApplied(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Applied => f.write_str("applied"),
            Outcome::NewConnections => f.write_str("applied to new connections"),
            Outcome::Restart => f.write_str("restart to apply"),
            Outcome::Added => f.write_str("added"),
            Outcome::Removed => f.write_str("removed"),
            Outcome::Kept(what) | Outcome::Reset(what) => f.write_str(what),
            Outcome::NotApplied(why) => write!(f, "not applied: {why}"),
        }
    }
}

/// One entry of a reload's answer: `key: outcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// The key path, or the component's own path for what became of its state.
    pub key: String,
    /// What happened to it.
    pub outcome: Outcome,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.outcome)
    }
}

/// The changes one component (or the whole reload) reports, under a key path.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    scope: String,
    list: Vec<Change>,
}

/// `name` as a TOML key segment: bare when it can be, quoted otherwise.
fn segment(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

impl Changes {
    /// None yet, for keys named in full (`server.listen`).
    pub(crate) fn new() -> Self {
        Changes::default()
    }

    /// None yet, for the keys of one named component (`upstream.shop`).
    pub(crate) fn of(kind: &str, name: &str) -> Self {
        Changes {
            scope: format!("{kind}.{}", segment(name)),
            list: Vec::new(),
        }
    }

    /// None yet, for the keys under `name` within this scope (`….rate_limits`).
    pub(crate) fn within(&self, name: &str) -> Self {
        Changes {
            scope: format!("{}.{}", self.scope, segment(name)),
            list: Vec::new(),
        }
    }

    /// Says what happened to `key` (empty: to the component itself).
    pub(crate) fn push(&mut self, key: &str, outcome: Outcome) {
        let key = match (self.scope.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.scope.clone(),
            (false, false) => format!("{}.{key}", self.scope),
        };
        self.list.push(Change { key, outcome });
    }

    /// Says what happened to the component itself (its state, its presence).
    pub(crate) fn say(&mut self, outcome: Outcome) {
        self.push("", outcome);
    }

    /// Says what happened to the component `kind.name` as a whole (added, removed, its
    /// state), from a scope that holds several.
    pub(crate) fn named(&mut self, kind: &str, name: &str, outcome: Outcome) {
        self.push(&format!("{kind}.{}", segment(name)), outcome);
    }

    /// Pushes `key: outcome` when the value changed; says whether it did.
    pub(crate) fn compare<T: PartialEq + ?Sized>(
        &mut self,
        key: &str,
        old: &T,
        new: &T,
        outcome: Outcome,
    ) -> bool {
        let changed = old != new;
        if changed {
            self.push(key, outcome);
        }
        changed
    }

    /// Like [`Changes::compare`] by the values' Debug form, for settings without
    /// `PartialEq` (a reload is no hot path).
    pub(crate) fn compare_debug<T: fmt::Debug + ?Sized>(
        &mut self,
        key: &str,
        old: &T,
        new: &T,
        outcome: Outcome,
    ) -> bool {
        self.compare(key, &format!("{old:?}"), &format!("{new:?}"), outcome)
    }

    /// Takes in the changes of a part (keys already in full).
    pub(crate) fn append(&mut self, mut part: Changes) {
        self.list.append(&mut part.list);
    }

    /// Whether nothing changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The changes, in the order found.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Change> {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_in_the_file_with_odd_names_quoted() {
        let mut c = Changes::of("upstream", "shop");
        c.compare("connect_timeout", &1, &2, Outcome::Applied);
        c.compare("response_timeout", &1, &1, Outcome::Applied);
        c.say(Outcome::Reset("connection pool rebuilt"));
        let mut limit = Changes::of("route", "shop.example")
            .within("rate_limits")
            .within("per ip");
        limit.say(Outcome::Kept("buckets kept"));
        c.append(limit);
        let said: Vec<String> = c.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            [
                "upstream.shop.connect_timeout: applied",
                "upstream.shop: connection pool rebuilt",
                "route.\"shop.example\".rate_limits.\"per ip\": buckets kept",
            ]
        );
    }

    #[test]
    fn settings_without_partial_eq_compare_by_their_debug_form() {
        let mut c = Changes::new();
        assert!(!c.compare_debug("a", &Some(1), &Some(1), Outcome::Applied));
        assert!(c.compare_debug("b", &Some(1), &None, Outcome::Restart));
        let said: Vec<String> = c.iter().map(ToString::to_string).collect();
        assert_eq!(said, ["b: restart to apply"]);
    }
}

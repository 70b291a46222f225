//! Priority classes: which waiting request is admitted first, and which is shed first.

use std::fmt;
use std::str::FromStr;

use http::{Method, Request};

/// A request's admission class. Higher classes leave the queue first; under overload
/// the lowest class is shed first.
///
/// Classified by the route's `priority` rules, unless a layer in front of admission
/// (the waiting room, for an admitted shopper) has put a `Priority` into the request's
/// extensions: that value is honoured as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Browsing that can wait or be refused first (search, listings).
    Low = 0,
    /// Everything not classified otherwise.
    #[default]
    Normal = 1,
    /// A purchase in progress (cart, checkout): served first, shed last.
    High = 2,
}

/// Number of classes, for per-class arrays.
pub const CLASSES: usize = 3;

impl Priority {
    /// All classes, highest first (the order the queue is served in).
    pub const HIGHEST_FIRST: [Priority; CLASSES] =
        [Priority::High, Priority::Normal, Priority::Low];

    /// The config and log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// Index into per-class arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "low" => Ok(Priority::Low),
            "normal" => Ok(Priority::Normal),
            "high" => Ok(Priority::High),
            other => Err(format!(
                "{other:?}: expected \"high\", \"normal\" or \"low\""
            )),
        }
    }
}

/// One `priority` rule of a route: a request matching every condition given gets `class`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityRule {
    /// The path starts with this (a plain string prefix, like the route's own).
    pub path_prefix: Option<String>,
    /// The method is one of these; empty means any method.
    pub methods: Vec<Method>,
    /// The class given.
    pub class: Priority,
}

impl PriorityRule {
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.path_prefix
            .as_deref()
            .map_or(true, |p| path.starts_with(p))
            && (self.methods.is_empty() || self.methods.contains(method))
    }
}

/// The class of a request: its `Priority` extension if a layer set one, else `high`
/// for a shopper the waiting room admitted (a pass holder is never shed for browsing),
/// else the first matching rule, else `normal`.
pub fn classify<B>(rules: &[PriorityRule], req: &Request<B>) -> Priority {
    if let Some(p) = req.extensions().get::<Priority>() {
        return *p;
    }
    if crate::waiting_room::is_admitted(req) {
        return Priority::High;
    }
    let path = req.uri().path();
    rules
        .iter()
        .find(|r| r.matches(req.method(), path))
        .map_or(Priority::Normal, |r| r.class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: Option<&str>, methods: &[Method], class: Priority) -> PriorityRule {
        PriorityRule {
            path_prefix: prefix.map(str::to_string),
            methods: methods.to_vec(),
            class,
        }
    }

    fn req(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[test]
    fn the_first_matching_rule_wins_and_no_match_is_normal() {
        let rules = vec![
            rule(Some("/checkout"), &[], Priority::High),
            rule(Some("/search"), &[], Priority::Low),
            rule(None, &[Method::POST], Priority::High),
        ];
        assert_eq!(
            classify(&rules, &req(Method::GET, "/checkout/pay")),
            Priority::High
        );
        assert_eq!(
            classify(&rules, &req(Method::GET, "/search?q=tv")),
            Priority::Low
        );
        assert_eq!(
            classify(&rules, &req(Method::POST, "/search")),
            Priority::Low
        );
        assert_eq!(
            classify(&rules, &req(Method::POST, "/anything")),
            Priority::High
        );
        assert_eq!(
            classify(&rules, &req(Method::GET, "/products/1")),
            Priority::Normal
        );
    }

    #[test]
    fn a_request_the_waiting_room_admitted_is_high_whatever_the_rules() {
        let rules = vec![rule(Some("/search"), &[], Priority::Low)];
        let mut r = req(Method::GET, "/search");
        r.extensions_mut().insert(crate::waiting_room::Admitted);
        assert_eq!(classify(&rules, &r), Priority::High);
    }

    #[test]
    fn a_priority_set_by_an_earlier_layer_overrides_the_rules() {
        let rules = vec![rule(Some("/search"), &[], Priority::Low)];
        let mut r = req(Method::GET, "/search");
        r.extensions_mut().insert(Priority::High);
        assert_eq!(classify(&rules, &r), Priority::High);
    }
}

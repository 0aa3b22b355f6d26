//! How far a document reaches, measured in one pass over its text's own
//! structure: each fragment is measured once and its measure reused at every
//! spread, so the cost grows with the document's size, never with its
//! expansion (a fragment spread twice per level doubles the expansion at
//! each level, not the work here).
//!
//! Introspection is measured apart from the rest. The standard schema query
//! of every GraphQL tool (graphql-js's `getIntrospectionQuery`) nests 15
//! levels deep, nine of them the `ofType` chain of a type reference, which
//! costs nothing; what does cost is lists inside lists (`types`, then
//! `fields`, then `args` ...). So introspection gets its own depth limit and
//! a limit on nested lists, while every other selection keeps the
//! configured depth limit.

use std::collections::HashMap;

use async_graphql::Positioned;
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// Deepest introspection selection: the standard query needs 15.
pub const MAX_INTROSPECTION_DEPTH: usize = 16;
/// Most introspection lists nested in one another: the standard query
/// nests three (`types { fields { args } }`).
pub const MAX_INTROSPECTION_LISTS: usize = 3;

/// What a document reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measure {
    /// Deepest nesting of fields outside introspection.
    pub depth: usize,
    /// Deepest nesting of fields inside `__schema` and `__type` (counting them).
    pub introspection_depth: usize,
    /// Most introspection lists nested in one another.
    pub introspection_lists: usize,
    /// Deepest nesting of selection sets, fragments counted: how deep a
    /// recursive walk over the document goes.
    pub nesting: usize,
    /// Fields once every fragment spread is replaced by its fragment
    /// (saturating): what a walk over the expanded document visits.
    pub expanded_fields: u64,
    /// `auditReport` fields once fragments are expanded: each is a full
    /// replay of the log.
    pub audit_reports: u64,
    /// The longest string literal among the arguments, in characters.
    pub longest_string: usize,
}

impl Measure {
    fn merge(&mut self, other: Measure) {
        self.depth = self.depth.max(other.depth);
        self.introspection_depth = self.introspection_depth.max(other.introspection_depth);
        self.introspection_lists = self.introspection_lists.max(other.introspection_lists);
        self.nesting = self.nesting.max(other.nesting);
        self.expanded_fields = self.expanded_fields.saturating_add(other.expanded_fields);
        self.audit_reports = self.audit_reports.saturating_add(other.audit_reports);
        self.longest_string = self.longest_string.max(other.longest_string);
    }
}

/// Introspection fields whose value is a list of objects.
fn is_introspection_list(name: &str) -> bool {
    matches!(
        name,
        "types" | "directives" | "fields" | "interfaces" | "possibleTypes" | "enumValues" | "inputFields" | "args"
    )
}

/// The longest string in `value`, in characters (lists and objects searched).
pub fn longest_string(value: &async_graphql::Value) -> usize {
    match value {
        async_graphql::Value::String(s) => s.chars().count(),
        async_graphql::Value::List(items) => items.iter().map(longest_string).max().unwrap_or(0),
        async_graphql::Value::Object(fields) => fields.values().map(longest_string).max().unwrap_or(0),
        _ => 0,
    }
}

/// Measures every operation of `document` (the largest of each figure).
pub fn measure(document: &ExecutableDocument) -> Measure {
    let mut walk = Walk { document, memo: HashMap::new() };
    let mut total = Measure::default();
    for (_, operation) in document.operations.iter() {
        total.merge(walk.set(&operation.node.selection_set, false));
    }
    total
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    /// Each fragment's measure, outside and inside introspection; `None`
    /// while it is being measured (a cycle, which validation refuses, adds nothing).
    memo: HashMap<(&'a str, bool), Option<Measure>>,
}

impl<'a> Walk<'a> {
    fn set(&mut self, set: &'a Positioned<SelectionSet>, inside: bool) -> Measure {
        let mut measure = Measure::default();
        for selection in &set.node.items {
            let one = match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let name = field.name.node.as_str();
                    let enters = !inside && (name == "__schema" || name == "__type");
                    let mut inner = self.set(&field.selection_set, inside || enters);
                    for (_, value) in &field.arguments {
                        // Variables stand as null: their values are measured where they come in.
                        let literal = value.node.clone().into_const_with(|_| Ok::<_, ()>(async_graphql::Value::Null));
                        let longest = literal.as_ref().map_or(0, longest_string);
                        inner.longest_string = inner.longest_string.max(longest);
                    }
                    let nesting = inner.nesting + 1;
                    if inside || enters {
                        Measure {
                            depth: inner.depth,
                            introspection_depth: inner.introspection_depth + 1,
                            introspection_lists: inner.introspection_lists
                                + usize::from(inside && is_introspection_list(name)),
                            nesting,
                            expanded_fields: inner.expanded_fields.saturating_add(1),
                            ..inner
                        }
                    } else {
                        Measure {
                            depth: inner.depth + 1,
                            nesting,
                            expanded_fields: inner.expanded_fields.saturating_add(1),
                            audit_reports: inner.audit_reports.saturating_add(u64::from(name == "auditReport")),
                            ..inner
                        }
                    }
                }
                Selection::InlineFragment(fragment) => {
                    let inner = self.set(&fragment.node.selection_set, inside);
                    Measure { nesting: inner.nesting + 1, ..inner }
                }
                Selection::FragmentSpread(spread) => {
                    let inner = self.fragment(spread.node.fragment_name.node.as_str(), inside);
                    Measure { nesting: inner.nesting + 1, ..inner }
                }
            };
            measure.merge(one);
        }
        measure
    }

    fn fragment(&mut self, name: &'a str, inside: bool) -> Measure {
        match self.memo.get(&(name, inside)) {
            Some(Some(known)) => return *known,
            Some(None) => return Measure::default(),
            None => {}
        }
        let document = self.document;
        let Some(fragment) = document.fragments.get(name) else {
            // An unknown fragment: validation refuses it.
            return Measure::default();
        };
        self.memo.insert((name, inside), None);
        let measure = self.set(&fragment.node.selection_set, inside);
        self.memo.insert((name, inside), Some(measure));
        measure
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn of(query: &str) -> Measure {
        measure(&parse_query(query).unwrap())
    }

    #[test]
    fn fields_nest_as_deep_as_their_selections() {
        let m = of("{ a { b { c } } d }");
        assert_eq!((m.depth, m.introspection_depth, m.expanded_fields), (3, 0, 4));
    }

    #[test]
    fn fragments_count_where_they_are_spread() {
        let m = of("{ a { ...F } } fragment F on T { b { c } }");
        assert_eq!(m.depth, 3);
    }

    #[test]
    fn introspection_is_measured_apart() {
        let m = of("{ stores { id } __schema { types { fields { args { type { ofType { name } } } } } } }");
        assert_eq!(m.depth, 2);
        assert_eq!(m.introspection_depth, 7);
        assert_eq!(m.introspection_lists, 3);
    }

    #[test]
    fn a_doubling_fragment_chain_is_measured_without_expanding_it() {
        let mut query = String::from("query { ...F0 }");
        for level in 0..40 {
            query.push_str(&format!(" fragment F{level} on Query {{ ...F{next} ...F{next} }}", next = level + 1));
        }
        query.push_str(" fragment F40 on Query { stores { id } }");
        let m = of(&query);
        assert_eq!(m.depth, 2);
        // 2^40 copies of two fields: beyond any limit, found without visiting them.
        assert_eq!(m.expanded_fields, 2u64 << 40);
    }

    #[test]
    fn audit_reports_are_counted_through_aliases_and_fragments() {
        let m = of("{ a: auditReport { clean } ...F ...F } fragment F on Query { b: auditReport { clean } }");
        assert_eq!(m.audit_reports, 3);
    }

    #[test]
    fn the_longest_string_argument_is_found_in_lists_and_objects() {
        let m = of(r#"{ a(x: "abc", y: [{ z: "abcdef" }]) { b(w: $v) } }"#);
        assert_eq!(m.longest_string, 6);
    }

    #[test]
    fn a_fragment_cycle_ends() {
        let m = of("{ ...A } fragment A on Query { a ...B } fragment B on Query { b ...A }");
        assert!(m.expanded_fields >= 2);
    }
}

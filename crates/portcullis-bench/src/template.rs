//! Templates for request paths, header values and bodies: literal text with `{{name}}`
//! placeholders filled from variables (a list of values or an integer range) drawn at random
//! for each request. Single braces are literal, so JSON bodies need no escaping. Each variable
//! is drawn once per request, so `{{user}}` in the path and in a header agree.

use std::{collections::BTreeMap, fmt::Write};

/// Where a variable's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Variable {
    /// One of these values, uniformly.
    List(Vec<String>),
    /// An integer in `low..=high`, uniformly.
    Range(i64, i64),
    /// One row of a table (a CSV file), uniformly; each column is a placeholder
    /// `{{name.column}}`, and one request's columns come from the same row.
    Rows {
        /// Column names, from the file's header line.
        columns: Vec<String>,
        /// The rows, each as long as `columns`.
        rows: Vec<Vec<String>>,
    },
}

impl Variable {
    /// How many placeholders it fills.
    fn width(&self) -> usize {
        match self {
            Variable::Rows { columns, .. } => columns.len(),
            _ => 1,
        }
    }

    /// Draws into `out`, one string per placeholder (see [`Variable::width`]).
    fn draw(&self, rng: &mut fastrand::Rng, out: &mut [String]) {
        for slot in out.iter_mut() {
            slot.clear();
        }
        match (self, out) {
            (Variable::List(values), [slot]) => {
                if let Some(v) = values.get(rng.usize(..values.len())) {
                    slot.push_str(v);
                }
            }
            (Variable::Range(low, high), [slot]) => {
                let _ = write!(slot, "{}", rng.i64(*low..=*high));
            }
            (Variable::Rows { rows, .. }, slots) => {
                if let Some(row) = rows.get(rng.usize(..rows.len())) {
                    for (slot, value) in slots.iter_mut().zip(row) {
                        slot.push_str(value);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The variables of a run, by name, in a fixed order (their index is what templates store).
#[derive(Debug, Clone, Default)]
pub struct Variables {
    /// Placeholder names (`name`, or `name.column` for a table), in slot order.
    names: Vec<String>,
    /// Each variable and the first of its slots.
    values: Vec<(Variable, usize)>,
}

impl Variables {
    /// Variables from a map; validates lists and ranges.
    pub fn new(map: BTreeMap<String, Variable>) -> Result<Self, String> {
        let mut vars = Self::default();
        for (name, var) in map {
            match &var {
                Variable::List(v) if v.is_empty() => {
                    return Err(format!("variable {name:?}: the list is empty"));
                }
                Variable::Range(lo, hi) if lo > hi => {
                    return Err(format!("variable {name:?}: range [{lo}, {hi}] is empty"));
                }
                Variable::Rows { rows, .. } if rows.is_empty() => {
                    return Err(format!("variable {name:?}: the table has no rows"));
                }
                _ => {}
            }
            let first = vars.names.len();
            match &var {
                Variable::Rows { columns, .. } => {
                    vars.names
                        .extend(columns.iter().map(|c| format!("{name}.{c}")));
                }
                _ => vars.names.push(name),
            }
            vars.values.push((var, first));
        }
        Ok(vars)
    }

    /// Draws one value of every variable into `out` (reusing its strings).
    pub fn draw_all(&self, rng: &mut fastrand::Rng, out: &mut Vec<String>) {
        out.resize(self.names.len(), String::new());
        for (var, first) in &self.values {
            var.draw(rng, &mut out[*first..*first + var.width()]);
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Var(usize),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`, resolving `{{name}}` against `vars`.
    pub fn parse(text: &str, vars: &Variables) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                format!("{text:?}: unclosed '{{{{' (placeholders are {{{{name}}}})")
            })?;
            let name = after[..close].trim();
            let index = vars
                .index(name)
                .ok_or_else(|| format!("{text:?}: unknown variable {{{{{name}}}}}"))?;
            parts.push(Part::Var(index));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// A template that is `text` as it is, without placeholders.
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Literal(text.to_owned())],
        }
    }

    /// The text, when the template has no placeholders.
    pub fn as_literal(&self) -> Option<String> {
        match self.parts.as_slice() {
            [] => Some(String::new()),
            [Part::Literal(s)] => Some(s.clone()),
            _ => None,
        }
    }

    /// Renders with this request's drawn values.
    pub fn render(&self, values: &[String], out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(i) => out.push_str(values.get(*i).map_or("", String::as_str)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        Variables::new(BTreeMap::from([
            ("id".to_owned(), Variable::Range(5, 5)),
            ("sku".to_owned(), Variable::List(vec!["a1".to_owned()])),
        ]))
        .unwrap()
    }

    #[test]
    fn renders_placeholders_and_escaped_braces() {
        let vars = vars();
        let t = Template::parse("/items/{{sku}}?user={{ id }}&x={y}", &vars).unwrap();
        let mut values = Vec::new();
        vars.draw_all(&mut fastrand::Rng::with_seed(1), &mut values);
        let mut out = String::new();
        t.render(&values, &mut out);
        assert_eq!(out, "/items/a1?user=5&x={y}");
        assert_eq!(t.as_literal(), None);
        assert_eq!(
            Template::parse("/plain", &vars).unwrap().as_literal(),
            Some("/plain".to_owned())
        );
    }

    #[test]
    fn ranges_stay_within_bounds() {
        let vars =
            Variables::new(BTreeMap::from([("n".to_owned(), Variable::Range(-2, 3))])).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut values = Vec::new();
        for _ in 0..200 {
            vars.draw_all(&mut rng, &mut values);
            let n: i64 = values[0].parse().unwrap();
            assert!((-2..=3).contains(&n));
        }
    }

    #[test]
    fn a_tables_columns_come_from_one_row_per_draw() {
        let rows = (0..50)
            .map(|i| vec![format!("user{i}"), format!("pw{i}")])
            .collect();
        let vars = Variables::new(BTreeMap::from([
            (
                "login".to_owned(),
                Variable::Rows {
                    columns: vec!["name".into(), "password".into()],
                    rows,
                },
            ),
            ("n".to_owned(), Variable::Range(7, 7)),
        ]))
        .unwrap();
        let t = Template::parse("{{login.name}}:{{login.password}}:{{n}}", &vars).unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        let (mut values, mut seen) = (Vec::new(), std::collections::HashSet::new());
        for _ in 0..200 {
            vars.draw_all(&mut rng, &mut values);
            let mut out = String::new();
            t.render(&values, &mut out);
            let parts: Vec<&str> = out.split(':').collect();
            assert_eq!(
                parts[0].trim_start_matches("user"),
                parts[1].trim_start_matches("pw")
            );
            assert_eq!(parts[2], "7");
            seen.insert(parts[0].to_owned());
        }
        assert!(
            seen.len() > 20,
            "rows are drawn across the table: {}",
            seen.len()
        );
        assert!(
            Template::parse("{{login}}", &vars)
                .unwrap_err()
                .contains("unknown variable")
        );
    }

    #[test]
    fn unknown_variables_and_unbalanced_braces_are_errors() {
        let vars = vars();
        assert!(
            Template::parse("/{{nope}}", &vars)
                .unwrap_err()
                .contains("unknown variable {{nope}}")
        );
        assert!(
            Template::parse("/{{id", &vars)
                .unwrap_err()
                .contains("unclosed")
        );
        assert_eq!(
            Template::parse("{\"a\": 1}", &vars).unwrap().as_literal(),
            Some("{\"a\": 1}".to_owned()),
            "single braces are literal"
        );
        let empty = BTreeMap::from([("e".to_owned(), Variable::List(vec![]))]);
        assert!(Variables::new(empty).unwrap_err().contains("empty"));
    }
}

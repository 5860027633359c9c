//! How `postern ctl` prints an answer: the JSON as the API gave it (`--output json`), or a
//! table of chosen columns for lists and `key: value` lines for one object (`table`).

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// The columns of a list: (heading, dotted path into each item).
pub type Columns = &'static [(&'static str, &'static str)];

pub fn print(answer: &Value, output: Output, columns: Columns) {
    match output {
        Output::Json => {
            if !answer.is_null() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(answer).expect("JSON prints")
                );
            }
        }
        Output::Table => match answer.get("items").and_then(Value::as_array) {
            Some(items) if !columns.is_empty() => {
                print!("{}", table(items, columns));
                if let Some(next) = answer["next_cursor"].as_str() {
                    println!("(more: --cursor {next})");
                }
            }
            _ => print!("{}", fields(answer)),
        },
    }
}

fn at<'a>(item: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(item, |v, key| &v[key])
}

/// A cell: strings bare, arrays joined by commas, null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub fn table(items: &[Value], columns: Columns) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, p)| cell(at(item, p))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(|(h, _)| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// One object as `key: value` lines (nested values as compact JSON).
fn fields(v: &Value) -> String {
    match v {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) => format!("{k}: {v}\n"),
                Value::Array(a) if a.iter().any(Value::is_object) => format!("{k}: {v}\n"),
                v => format!("{k}: {}\n", cell(v)),
            })
            .collect(),
        Value::Null => String::new(),
        other => format!("{}\n", cell(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_is_a_table_with_aligned_columns() {
        let items = [
            json!({"id": "01A", "match": "bank.example", "level": "encrypt", "tags": ["a", "b"]}),
            json!({"id": "01B", "match": "10.0.0.0/8", "level": "may", "tags": null}),
        ];
        let columns: Columns = &[("ID", "id"), ("MATCH", "match"), ("TAGS", "tags")];
        assert_eq!(
            table(&items, columns),
            "ID   MATCH         TAGS\n01A  bank.example  a,b\n01B  10.0.0.0/8    -\n"
        );
    }
}

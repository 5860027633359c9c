//! The lab's results as Markdown tables (case x peer -> result), in the order they were run,
//! and the failures with the evidence that shows them.

use std::collections::HashMap;

#[derive(Default)]
pub struct Matrix {
    tables: Vec<Table>,
    pub failures: Vec<String>,
    pub passed: usize,
}

struct Table {
    title: String,
    columns: Vec<String>,
    rows: Vec<String>,
    cells: HashMap<(usize, usize), String>,
}

/// One cell's result: what was expected and shown, or what went wrong instead.
pub enum Check {
    Pass(String),
    Fail { summary: String, evidence: String },
}

impl Check {
    pub fn fail(summary: &str, evidence: impl Into<String>) -> Check {
        Check::Fail {
            summary: summary.into(),
            evidence: evidence.into(),
        }
    }
}

impl Matrix {
    pub fn table(&mut self, title: &str, columns: &[&str]) {
        self.tables.push(Table {
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            cells: HashMap::new(),
        });
    }

    /// Records a cell of the last table begun.
    pub fn record(&mut self, row: &str, column: &str, check: Check) {
        let t = self.tables.last_mut().expect("a table is begun first");
        let r = t.rows.iter().position(|x| x == row).unwrap_or_else(|| {
            t.rows.push(row.into());
            t.rows.len() - 1
        });
        let c = t
            .columns
            .iter()
            .position(|x| x == column)
            .unwrap_or_else(|| panic!("no column {column}"));
        let text = match check {
            Check::Pass(s) => {
                self.passed += 1;
                format!("✓ {s}")
            }
            Check::Fail { summary, evidence } => {
                eprintln!("[interop] evidence: {evidence}");
                self.failures.push(format!(
                    "{} / {row} / {column}: {summary}\n    {evidence}",
                    t.title
                ));
                format!("✗ {summary}")
            }
        };
        eprintln!("[interop] {} | {row} | {column} | {text}", t.title);
        t.cells.insert((r, c), text);
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            out.push_str(&format!(
                "\n**{}**\n\n| case | {} |\n|---|",
                t.title,
                t.columns.join(" | ")
            ));
            out.push_str(&"---|".repeat(t.columns.len()));
            out.push('\n');
            for (r, row) in t.rows.iter().enumerate() {
                out.push_str(&format!("| {row} |"));
                for c in 0..t.columns.len() {
                    let cell = t.cells.get(&(r, c)).map_or("n/a", String::as_str);
                    out.push_str(&format!(" {} |", cell.replace('|', "\\|")));
                }
                out.push('\n');
            }
        }
        out
    }
}

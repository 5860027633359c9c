//! Imports (issue 14 point 5): a Postfix `smtp_tls_policy_maps` table into the outbound rules,
//! and a rule list exported from another gateway's console (CSV: match, level,
//! cipher_strength, enabled, comment) into either direction. Parsing is pure; every line that
//! does not map one to one is reported with what it became or why it was skipped.

use serde_json::{Value, json};

/// What a source file becomes: the rules, in file order, and one note per line that needed
/// a decision.
#[derive(Debug, Default)]
pub struct Imported {
    pub rules: Vec<Value>,
    pub notes: Vec<String>,
    /// The matches taken so far, lowercased.
    seen: std::collections::HashSet<String>,
}

impl Imported {
    fn note(&mut self, line: usize, text: impl std::fmt::Display) {
        self.notes.push(format!("line {line}: {text}"));
    }

    /// Keeps the first rule for a match, as postmap(1) does, and notes the later ones.
    fn push(&mut self, line: usize, rule: Value) {
        let m = cell(&rule["match"]);
        if self.seen.insert(m.to_ascii_lowercase()) {
            self.rules.push(rule);
        } else {
            self.note(
                line,
                format_args!("{m} again: skipped, the first entry stands"),
            );
        }
    }
}

fn cell(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// Postfix's table syntax (postmap(1)): `#` comment lines and blank lines are ignored, a line
/// that starts with whitespace continues the previous one. Each logical line with its number.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match lines.last_mut() {
            Some((_, line)) if raw.starts_with([' ', '\t']) => {
                line.push(' ');
                line.push_str(trimmed);
            }
            _ => lines.push((i + 1, trimmed.to_string())),
        }
    }
    lines
}

/// A Postfix `smtp_tls_policy_maps` table (`domain level [name=value ...]`, `.domain` for its
/// subdomains) as outbound rules.
pub fn postfix_tls_policy(text: &str) -> Imported {
    let mut out = Imported::default();
    for (n, line) in logical_lines(text) {
        let mut words = line.split_whitespace();
        let (Some(key), Some(level)) = (words.next(), words.next()) else {
            out.note(n, format_args!("'{line}': no level: skipped"));
            continue;
        };
        if key.starts_with('[') || key.contains(':') {
            out.note(
                n,
                format_args!(
                    "{key}: a next-hop key has no equivalent (outbound rules match recipient \
                     domains): skipped"
                ),
            );
            continue;
        }
        let domain = key.to_ascii_lowercase();
        let valid = domain
            .trim_start_matches('.')
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !valid {
            out.note(n, format_args!("{key}: not a domain: skipped"));
            continue;
        }
        let mapped = match level.to_ascii_lowercase().as_str() {
            l @ ("none" | "may" | "encrypt" | "verify") => Some(l.to_string()),
            "secure" => {
                out.note(n, format_args!("{key} secure: mapped to verify (the certificate must verify for the MX host name; Postfix's match= names are not used)"));
                Some("verify".into())
            }
            "dane" => {
                out.note(
                    n,
                    format_args!(
                        "{key} dane: mapped to may (no DANE yet: TLS when offered, else plaintext)"
                    ),
                );
                Some("may".into())
            }
            "dane-only" => {
                out.note(n, format_args!("{key} dane-only: mapped to verify (no DANE yet: the nearest level that never falls back to plaintext)"));
                Some("verify".into())
            }
            "fingerprint" => {
                out.note(n, format_args!("{key} fingerprint: certificate pinning has no equivalent (any mapping weakens or breaks delivery): skipped"));
                None
            }
            other => {
                out.note(
                    n,
                    format_args!("{key} {other}: not a Postfix TLS level: skipped"),
                );
                None
            }
        };
        let Some(level) = mapped else { continue };
        let mut rule = json!({
            "match": domain,
            "level": level,
            "comment": format!("postfix tls policy line {n}"),
        });
        for option in words {
            match option.split_once('=') {
                Some(("ciphers", "high")) => rule["cipher_strength"] = "high".into(),
                Some(("ciphers", "medium")) => {}
                Some(("ciphers", other)) => out.note(
                    n,
                    format_args!("{key} ciphers={other}: Postern's floor is medium: medium"),
                ),
                _ => out.note(n, format_args!("{key} {option}: no equivalent: ignored")),
            }
        }
        out.push(n, rule);
    }
    out
}

/// A CSV rule list: `match,level,cipher_strength,enabled,comment` (a header row naming them
/// is skipped; the last three may be empty: medium, enabled, no comment).
pub fn csv_rules(text: &str) -> Imported {
    let mut out = Imported::default();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    for (i, record) in reader.records().enumerate() {
        let n = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(i + 1, |p| p.line() as usize);
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                out.note(n, format_args!("{e}: skipped"));
                continue;
            }
        };
        let field = |k: usize| record.get(k).unwrap_or("");
        if i == 0 && field(0).eq_ignore_ascii_case("match") {
            continue;
        }
        if field(0).is_empty() || field(1).is_empty() {
            out.note(n, "no match or no level: skipped");
            continue;
        }
        let mut rule = json!({"match": field(0), "level": field(1).to_ascii_lowercase()});
        if !field(2).is_empty() {
            rule["cipher_strength"] = field(2).to_ascii_lowercase().into();
        }
        match field(3).to_ascii_lowercase().as_str() {
            "" | "true" | "yes" | "1" | "enabled" => {}
            "false" | "no" | "0" | "disabled" => rule["enabled"] = false.into(),
            other => {
                out.note(
                    n,
                    format_args!("enabled '{other}' is not true or false: skipped"),
                );
                continue;
            }
        }
        if !field(4).is_empty() {
            rule["comment"] = field(4).into();
        }
        out.push(n, rule);
    }
    out
}

/// What an import would change, by match: `+` added, `-` removed, `~` changed.
pub fn difference(current: &[Value], new: &[Value]) -> Vec<String> {
    use std::collections::HashMap;
    let key = |r: &Value| cell(&r["match"]).to_ascii_lowercase();
    let shown = |r: &Value| {
        let strength = r["cipher_strength"].as_str().unwrap_or("medium");
        let enabled = if r["enabled"] == false {
            " disabled"
        } else {
            ""
        };
        format!(
            "{} {}/{strength}{enabled}",
            cell(&r["match"]),
            cell(&r["level"])
        )
    };
    let old: HashMap<String, &Value> = current.iter().map(|r| (key(r), r)).collect();
    let mut lines = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in new {
        seen.insert(key(r));
        match old.get(&key(r)) {
            None => lines.push(format!("+ {}", shown(r))),
            Some(o) if shown(o) != shown(r) => {
                lines.push(format!("~ {} (was {})", shown(r), shown(o)))
            }
            Some(_) => {}
        }
    }
    for r in current {
        if !seen.contains(&key(r)) {
            lines.push(format!("- {}", shown(r)));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postfix_table_maps_line_by_line() {
        let table = "\
# partners
example.com      verify ciphers=high
.example.net     encrypt
  protocols=!SSLv2,!SSLv3
[mx.partner.example]:25  encrypt
bank.example     secure match=nexthop:dot-nexthop
dane.example     dane
pinned.example   fingerprint match=AB:CD
Example.com      may
weird_name!      may
";
        let got = postfix_tls_policy(table);
        let rules: Vec<String> = got
            .rules
            .iter()
            .map(|r| format!("{} {} {}", r["match"], r["level"], r["cipher_strength"]))
            .collect();
        assert_eq!(
            rules,
            [
                r#""example.com" "verify" "high""#,
                r#"".example.net" "encrypt" null"#,
                r#""bank.example" "verify" null"#,
                r#""dane.example" "may" null"#,
            ]
        );
        let notes = got.notes.join("\n");
        for expected in [
            "line 3: .example.net protocols=!SSLv2,!SSLv3: no equivalent: ignored",
            "line 5: [mx.partner.example]:25: a next-hop key has no equivalent",
            "line 6: bank.example secure: mapped to verify",
            "line 6: bank.example match=nexthop:dot-nexthop: no equivalent: ignored",
            "line 7: dane.example dane: mapped to may",
            "line 8: pinned.example fingerprint: certificate pinning has no equivalent",
            "line 9: example.com again: skipped, the first entry stands",
            "line 10: weird_name!: not a domain: skipped",
        ] {
            assert!(notes.contains(expected), "{expected}\nin\n{notes}");
        }
        assert_eq!(got.rules[1]["comment"], "postfix tls policy line 3");
    }

    #[test]
    fn a_csv_list_takes_a_header_quotes_and_defaults() {
        let csv = "match,level,cipher_strength,enabled,comment\n\
                   192.0.2.0/24,encrypt,high,true,\"relays, east\"\n\
                   partner.example,may,,,\n\
                   old.example,none,,no,retired\n\
                   broken.example,,,,\n\
                   x.example,may,,maybe,\n";
        let got = csv_rules(csv);
        assert_eq!(got.rules.len(), 3, "{:?}", got.notes);
        assert_eq!(got.rules[0]["comment"], "relays, east");
        assert_eq!(got.rules[0]["cipher_strength"], "high");
        assert_eq!(got.rules[2]["enabled"], false);
        assert_eq!(got.notes.len(), 2, "{:?}", got.notes);
        assert!(got.notes[0].starts_with("line 5: no match or no level"));
    }

    #[test]
    fn the_difference_names_what_is_added_removed_and_changed() {
        let current = [
            json!({"match": "a.example", "level": "may"}),
            json!({"match": "b.example", "level": "verify"}),
        ];
        let new = [
            json!({"match": "a.example", "level": "encrypt"}),
            json!({"match": "c.example", "level": "may", "enabled": false}),
        ];
        assert_eq!(
            difference(&current, &new),
            [
                "~ a.example encrypt/medium (was a.example may/medium)",
                "+ c.example may/medium disabled",
                "- b.example verify/medium",
            ]
        );
    }
}

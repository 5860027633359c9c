//! Validation of what operators write. Every function reports all problems it finds, each naming
//! its field, so one 422 tells the operator everything to fix.

use std::collections::HashMap;

use crate::error::FieldError;
use crate::level::Level;
use crate::matching::Match;
use crate::model::{Direction, Policy, Rule, RuleInput};

/// Longest comment we store; comments are for people, not documents.
const MAX_COMMENT: usize = 1024;

/// Checks one rule as written and returns its normalised match.
pub fn validate_rule_input(
    input: &RuleInput,
    direction: Direction,
) -> Result<Match, Vec<FieldError>> {
    let mut errors = Vec::new();
    let matches = match Match::parse(&input.matches) {
        Ok(m) if m.is_ip() && direction == Direction::Outbound => {
            errors.push(FieldError::new(
                "/match",
                "outbound rules match recipient domains, not addresses",
            ));
            None
        }
        Ok(m) => Some(m),
        Err(e) => {
            errors.push(FieldError::new("/match", e));
            None
        }
    };
    if input.comment.len() > MAX_COMMENT {
        errors.push(FieldError::new(
            "/comment",
            format!("is longer than {MAX_COMMENT} octets"),
        ));
    }
    match matches {
        Some(m) if errors.is_empty() => Ok(m),
        _ => Err(errors),
    }
}

/// Checks a whole rule list for duplicate matches (disabled rules included). Pointers are
/// `/items/<index>/match`, as in a replace-all body.
pub fn validate_rules(rules: &[Rule]) -> Vec<FieldError> {
    let mut seen: HashMap<&Match, usize> = HashMap::with_capacity(rules.len());
    let mut errors = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(first) = seen.insert(&rule.matches, i) {
            errors.push(FieldError::new(
                format!("/items/{i}/match"),
                format!("duplicate match '{}' (also /items/{first})", rule.matches),
            ));
        }
    }
    errors
}

/// docs/src/policy.md#inbound: an inbound `verify` rule (or default) cannot be enabled while no CA
/// is trusted,
/// since no client certificate could ever verify. Returns what is wrong, if anything.
pub fn trust_conflict(policy: &Policy) -> Option<String> {
    if !policy.trust.ca_pems.is_empty() {
        return None;
    }
    if policy.inbound_default.level == Level::Verify {
        return Some("the inbound default is 'verify' but /v1/trust holds no CA".into());
    }
    policy
        .inbound
        .iter()
        .find(|r| r.enabled && r.level == Level::Verify)
        .map(|r| {
            format!(
                "inbound rule {} ('{}') is an enabled 'verify' rule but /v1/trust holds no CA",
                r.id, r.matches
            )
        })
}

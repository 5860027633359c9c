//! Which entry decides the outbound TLS level for a recipient domain: an enabled local rule
//! beats a published MTA-STS policy, which beats the outbound default. A local rule is also how
//! an operator exempts a broken partner from its published policy.

use crate::cache::Cached;
use crate::policy::Mode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<'a> {
    /// The operator's rule for the domain.
    Rule,
    /// The domain's published policy (a `none` mode policy counts as none at all).
    Sts(&'a Cached),
    /// The outbound default.
    Default,
}

/// `local_rule`: an enabled outbound rule matched; `sts_enabled`: the global setting;
/// `policy`: the domain's policy in force, if any (valid, fetched or cached).
pub fn choose(local_rule: bool, sts_enabled: bool, policy: Option<&Cached>) -> Source<'_> {
    if local_rule {
        return Source::Rule;
    }
    match policy {
        Some(p) if sts_enabled && p.policy.mode != Mode::None => Source::Sts(p),
        _ => Source::Default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{MxPattern, Policy};

    fn cached(mode: Mode) -> Cached {
        Cached {
            id: "1".into(),
            policy: Policy {
                mode,
                max_age: 86400,
                mx: vec![MxPattern::parse("mx.example").unwrap()],
            },
            text: String::new(),
            fetched_at: 0,
        }
    }

    #[test]
    fn rule_then_sts_then_default() {
        let enforce = cached(Mode::Enforce);
        assert_eq!(choose(true, true, Some(&enforce)), Source::Rule);
        assert_eq!(choose(false, true, Some(&enforce)), Source::Sts(&enforce));
        assert_eq!(choose(false, false, Some(&enforce)), Source::Default);
        assert_eq!(choose(false, true, None), Source::Default);
        let testing = cached(Mode::Testing);
        assert_eq!(choose(false, true, Some(&testing)), Source::Sts(&testing));
        assert_eq!(
            choose(false, true, Some(&cached(Mode::None))),
            Source::Default
        );
    }
}

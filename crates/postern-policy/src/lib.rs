//! Postern's TLS policy domain, with no I/O: the rules operators write, their validation and
//! normalisation (docs/src/policy.md#rules-and-matching), relay control (3), settings (2.4, 4), and
//! the compiled form the
//! workers and the control plane's `evaluate` use to decide (2.2, 2.3).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod compiled;
mod domain;
mod error;
mod evaluate;
mod level;
mod matching;
mod model;
mod relay;
mod settings;
mod trust;
mod validate;
mod verdict;
mod warnings;

pub use compiled::CompiledPolicy;
pub use domain::{domain_of_address, normalize_domain, normalize_lookup_domain};
pub use error::{FieldError, ValidationErrors};
pub use evaluate::{Decision, Evaluation, Query, RuleRef};
pub use level::{CipherStrength, Level};
pub use matching::Match;
pub use model::{DefaultRule, Direction, Policy, Rule, RuleInput};
pub use relay::{NextHop, Relay, RelayDomain};
pub use settings::{DeliverySettings, QueueSettings, Settings, SmtpLimits, TrackingSettings};
pub use trust::Trust;
pub use validate::{trust_conflict, validate_rule_input, validate_rules};
pub use verdict::{
    AttemptFacts, Certificate, ConnectVerdict, Deferral, DeliveryPlan, Destination, EnhancedStatus,
    Judgement, KnownPolicy, MailVerdict, NoHostAllowed, Overridden, PolicySource, RcptVerdict,
    SessionTls, StsApplied, TlsStep, VerdictReply, Violation, after_ehlo, after_handshake,
    after_handshake_failure, after_starttls_refused,
};
pub use warnings::{Warning, rule_warnings};

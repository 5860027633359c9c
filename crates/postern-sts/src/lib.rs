//! MTA-STS (RFC 8461) and TLS-RPT (RFC 8460, `tlsrpt`) without I/O: the `_mta-sts` TXT record, the
//! policy file, MX patterns, the cache's state machine (when to fetch, what to use when DNS or
//! HTTPS fails) and where a published policy stands against the operator's own rules. The worker
//! does the DNS and the HTTPS and asks this crate what they mean.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod policy;
mod record;
pub mod report_mail;
mod result;
pub mod tlsrpt;

pub use cache::{Cached, FAILURE_BACKOFF_S, MIN_LIFETIME_S, Step, Txt, next_step};
pub use policy::{MAX_AGE_LIMIT, Mode, MxPattern, Policy, PolicyError};
pub use record::{RecordError, StsRecord, sts_record};
pub use result::{MAX_UNREGISTERED, PolicyType, ResultType};

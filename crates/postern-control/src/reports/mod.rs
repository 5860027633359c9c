//! TLS-RPT (RFC 8460) both ways: the reports Postern builds about its own deliveries and sends
//! to recipient domains (`sent`), and the reports other senders send about the operator's
//! domains, by HTTPS or by mail (`received`).

pub mod received;
pub mod sent;

pub use sent::{ReportError, TlsReportView, build, day_range, list, run};

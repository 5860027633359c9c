//! Sends a TLS-RPT report (RFC 8460 3, 5) for the control plane: the policy domain's
//! `_smtp._tls` record through our resolver, then each `rua` address: `mailto:` as a
//! `multipart/report` message through this worker's queue (`TLS-Required: No`), `https:` as a
//! POST of the compressed report. The control plane builds the report; the worker, which has
//! the resolver, the trust store and the queue, delivers it.

use std::net::SocketAddr;
use std::time::Duration;

use postern_sts::report_mail::{self, ReportMail};
use postern_sts::tlsrpt::{Rua, TlsRptError, tlsrpt_record};

use super::queue::Queue;
use super::submit::Local;

/// How long one HTTPS POST may take.
const POST_LIMIT: Duration = Duration::from_secs(10);

/// A report to send (`pb::SendTlsReport` in the worker's terms).
pub struct TlsReport {
    pub policy_domain: String,
    pub json: Vec<u8>,
    pub report_id: String,
    pub submitter: String,
    pub from: String,
    pub start_s: u64,
    pub end_s: u64,
}

/// What became of the report at one address.
pub struct Sent {
    pub rua: String,
    pub ok: bool,
    /// The mailed report's queue id, the HTTP status, or the failure.
    pub detail: String,
}

impl Queue {
    /// Sends `r` to every `rua` of its domain; `Ok(None)`: the domain publishes no record.
    pub async fn send_tls_report(&self, r: TlsReport) -> Result<Option<Vec<Sent>>, String> {
        let Some(policy) = self.policy.current() else {
            return Err("no policy yet".into());
        };
        let router = self
            .connector
            .dns
            .router(&policy)
            .map_err(|e| e.to_string())?;
        let name = format!("_smtp._tls.{}", r.policy_domain);
        let txts = router
            .txt(&name)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let ruas = match tlsrpt_record(&txts) {
            Ok(found) => {
                for why in &found.ignored {
                    tracing::warn!(domain = %r.policy_domain, rua = %why, "TLS-RPT address ignored");
                }
                found.ruas
            }
            Err(TlsRptError::None) => return Ok(None),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let gz = report_mail::gzip(&r.json);
        let trust = policy.policy.trust.certificates();
        let mut sent = Vec::new();
        for rua in ruas {
            let label = rua.to_string();
            let result = match &rua {
                Rua::Mailto(to) => self.mail(&r, to, &gz, policy.version).await,
                Rua::Https(url) => post(&router, url, &r, &gz, &trust).await,
            };
            match &result {
                Ok(detail) => {
                    tracing::info!(domain = %r.policy_domain, rua = %label, %detail, "TLS-RPT report sent")
                }
                Err(e) => {
                    tracing::warn!(domain = %r.policy_domain, rua = %label, error = %e, "TLS-RPT report not sent")
                }
            }
            let ok = result.is_ok();
            sent.push(Sent {
                rua: label,
                ok,
                detail: result.unwrap_or_else(|e| e),
            });
        }
        Ok(Some(sent))
    }

    /// Queues the report for `to`; its queue id.
    async fn mail(
        &self,
        r: &TlsReport,
        to: &str,
        gz: &[u8],
        version: u64,
    ) -> Result<String, String> {
        let id = ulid::Ulid::new().to_string();
        let message_id = format!("{id}@{}", self.hostname);
        let date = postern_time::rfc5322(postern_time::now_s());
        let mail = ReportMail {
            from: &r.from,
            to,
            submitter: &r.submitter,
            policy_domain: &r.policy_domain,
            report_id: &r.report_id,
            date: &date,
            message_id: &message_id,
            start_s: r.start_s,
            end_s: r.end_s,
        };
        let local = Local {
            sender: r.from.clone(),
            recipients: vec![to.to_string()],
            subject: mail.subject(),
            bytes: mail.compose(gz),
            policy_version: version,
            tls_optional: true,
        };
        self.queue_local(id.clone(), local)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("queued as {id}"))
    }
}

/// POSTs the compressed report to `url` (RFC 8460 5.2): any 2xx is success.
async fn post(
    router: &super::route::Router,
    url: &reqwest::Url,
    r: &TlsReport,
    gz: &[u8],
    trust: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<String, String> {
    let host = url.host_str().ok_or_else(|| format!("{url}: no host"))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let ips = router.ips(host).await.map_err(|e| format!("{host}: {e}"))?;
    let pinned: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    let client = crate::sts::fetch::https_client(host, &pinned, trust, POST_LIMIT)?;
    let response = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, report_mail::MEDIA_TYPE)
        .header(
            reqwest::header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}\"",
                report_mail::filename(&r.submitter, &r.policy_domain, r.start_s, r.end_s)
            ),
        )
        .body(gz.to_vec())
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(format!("HTTP {}", status.as_u16()))
    } else {
        Err(format!("{url}: HTTP {status}"))
    }
}

//! Building a day's TLS-RPT report for one domain (`postern_sts::tlsrpt::build`) from many
//! sessions: the control plane's daily work per recipient domain, and how far it scales.

use criterion::{Criterion, criterion_group, criterion_main};
use postern_sts::ResultType;
use postern_sts::tlsrpt::{Applied, ReportHeader, Session, build};

fn sessions(n: usize) -> Vec<Session> {
    let sts = Applied::Sts {
        lines: vec![
            "version: STSv1".into(),
            "mode: enforce".into(),
            "mx: *.example.net".into(),
            "max_age: 604800".into(),
        ],
        mx: vec!["*.example.net".into()],
    };
    let kinds = [
        ResultType::CertificateHostMismatch,
        ResultType::StartTlsNotSupported,
        ResultType::CertificateExpired,
    ];
    (0..n)
        .map(|i| Session {
            applied: if i % 10 == 0 {
                Applied::NoPolicyFound
            } else {
                sts.clone()
            },
            // One session in twenty fails, spread over kinds, MX hosts and addresses.
            result: (i % 20 == 0).then(|| kinds[i % 3].clone()),
            sending_ip: Some(format!("192.0.2.{}", i % 4)),
            receiving_mx: Some(format!("mx{}.example.net", i % 8)),
            receiving_ip: Some(format!("198.51.100.{}", i % 8)),
        })
        .collect()
}

fn header() -> ReportHeader {
    ReportHeader {
        organization_name: "Postern".into(),
        contact_info: "tlsrpt@example.org".into(),
        report_id: "2026-12-06_example.net@example.org".into(),
        start_datetime: "2026-12-06T00:00:00Z".into(),
        end_datetime: "2026-12-06T23:59:59Z".into(),
    }
}

fn bench(c: &mut Criterion) {
    for n in [1_000, 100_000] {
        let s = sessions(n);
        c.bench_function(&format!("tlsrpt_build_{n}_sessions"), |b| {
            b.iter(|| build(header(), "example.net", &s))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

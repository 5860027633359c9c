//! `evaluate` with 100,000 IP rules and 100,000 domain rules loaded (issue 2 target: median under
//! 1 µs), and the time to compile that policy. Run: `cargo bench -p postern-policy --bench evaluate`.
//! The compiled policy's memory is printed once (RSS before and after compiling, Linux only).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use postern_policy::{
    CipherStrength, CompiledPolicy, Direction, Level, Match, Policy, Query, Rule, Settings,
};

const N: usize = 100_000;

/// A fixed pseudo-random sequence, so every run measures the same policy.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 16
    }
}

fn rule(i: usize, matches: Match) -> Rule {
    Rule {
        id: format!("{i:026}"),
        matches,
        level: [Level::None, Level::May, Level::Encrypt, Level::Verify][i % 4],
        cipher_strength: if i.is_multiple_of(3) {
            CipherStrength::High
        } else {
            CipherStrength::Medium
        },
        enabled: !i.is_multiple_of(50),
        comment: String::new(),
    }
}

/// 100,000 IP rules (IPv4 /8 to /32 and IPv6 /32 to /128) and 100,000 domain rules
/// (exact and `.parent`), inbound; 100,000 domain rules outbound.
fn policy() -> Policy {
    let mut rng = Lcg(42);
    let mut seen = std::collections::HashSet::new();
    let mut inbound = Vec::with_capacity(2 * N);
    while inbound.len() < N {
        let m = if rng.next().is_multiple_of(4) {
            let len = 32 + (rng.next() % 97) as u8;
            let bits =
                (u128::from(rng.next()) << 64 | u128::from(rng.next())) | (0x2001_0db8u128 << 96);
            Match::Net(
                ipnet::IpNet::new(IpAddr::V6(Ipv6Addr::from(bits)), len)
                    .unwrap()
                    .trunc(),
            )
        } else {
            let len = 8 + (rng.next() % 25) as u8;
            Match::Net(
                ipnet::IpNet::new(IpAddr::V4(Ipv4Addr::from(rng.next() as u32)), len)
                    .unwrap()
                    .trunc(),
            )
        };
        if seen.insert(m.clone()) {
            inbound.push(rule(inbound.len(), m));
        }
    }
    let domain = |i: usize| format!("d{i}.{}.example", ["com", "net", "org", "de"][i % 4]);
    for i in 0..N {
        let m = if i % 2 == 0 {
            Match::Domain(domain(i))
        } else {
            Match::Subdomains(domain(i))
        };
        inbound.push(rule(N + i, m));
    }
    let outbound = (0..N)
        .map(|i| {
            rule(
                2 * N + i,
                if i % 2 == 0 {
                    Match::Domain(domain(i))
                } else {
                    Match::Subdomains(domain(i))
                },
            )
        })
        .collect();
    Policy {
        inbound,
        outbound,
        ..Policy::default()
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench(c: &mut Criterion) {
    let p = policy();
    let before = rss_kib();
    let compiled = CompiledPolicy::compile(1, p.clone(), Settings::default()).unwrap();
    if let (Some(b), Some(a)) = (before, rss_kib()) {
        eprintln!(
            "compiled policy ({} inbound + {} outbound rules): RSS grew by {} KiB",
            p.inbound.len(),
            p.outbound.len(),
            a.saturating_sub(b)
        );
    }

    let mut rng = Lcg(7);
    let ips: Vec<IpAddr> = (0..1024)
        .map(|i| {
            if i % 4 == 0 {
                IpAddr::V6(Ipv6Addr::from(
                    (0x2001_0db8u128 << 96) | u128::from(rng.next()),
                ))
            } else {
                IpAddr::V4(Ipv4Addr::from(rng.next() as u32))
            }
        })
        .collect();
    let senders: Vec<String> = (0..1024)
        .map(|i| match i % 3 {
            0 => format!("user@d{}.com.example", (rng.next() as usize % N) & !3),
            1 => format!("user@mx.a.d{}.net.example", (rng.next() as usize % N) | 1),
            _ => format!("user@nobody{i}.example"),
        })
        .collect();

    let mut g = c.benchmark_group("evaluate_100k_ip_100k_domain");
    let mut i = 0usize;
    g.bench_function("inbound_ip_and_sender", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let e = compiled.evaluate(&Query {
                direction: Direction::Inbound,
                client_ip: Some(ips[i]),
                sender: Some(&senders[i]),
                recipient: None,
                tls: None,
            });
            black_box(e.decision.level)
        })
    });
    g.bench_function("inbound_connect_ip_only", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(compiled.inbound_connect(Some(ips[i])).level)
        })
    });
    g.bench_function("outbound_recipient", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(compiled.outbound(&senders[i]).level)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("100k_ip_200k_domain_rules", |b| {
        b.iter(|| CompiledPolicy::compile(1, black_box(p.clone()), Settings::default()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

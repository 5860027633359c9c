//! The store tests, run against each engine: SQLite always, and PostgreSQL (a database of its
//! own on the test binary's server, Debian's) wherever it is installed; CI installs it.

use super::fold::tests::{received, record};
use super::query::{ConnectionFilter, MessageFilter};
use super::record::Status;
use super::*;

/// Runs `test` against a new, empty tracking database of each engine.
fn each_engine(test: impl Fn(&Tracking)) {
    let dir = tempfile::tempdir().unwrap();
    let mut locations = vec![Location::Sqlite(dir.path().join("tracking.sqlite"))];
    if let Some(url) = postern_testpg::database() {
        locations.push(Location::Postgres(url));
    }
    for location in locations {
        eprintln!("engine: {}", location.describe());
        test(&Tracking::connect(&location).unwrap());
    }
}

fn ok(records: &[Record]) -> Vec<Result<Record, u64>> {
    records.iter().cloned().map(Ok).collect()
}

fn ids(items: &[SummaryRecord]) -> Vec<&str> {
    items.iter().map(|m| m.id.as_str()).collect()
}

const DAY: u64 = 86_400_000;

/// Record `seq` at `at_ms`.
fn at(seq: u64, at_ms: u64, event: Event) -> Record {
    Record {
        at_ms,
        ..record(seq, event)
    }
}

#[test]
fn only_the_contiguous_sequence_is_acknowledged() {
    each_engine(|t| {
        let r = |i: u64| Ok(record(i, received(&format!("Q{i:03}"), false, &["b@y"])));
        let gap = |seq, first_seq, last_seq| {
            Ok(record(
                seq,
                Event::OutboxGap(postern_events::OutboxGap {
                    first_seq,
                    last_seq,
                }),
            ))
        };
        // 4 is missing: stored up to 3 only, and 5 is not stored.
        assert_eq!(
            t.ingest_blocking("w", "E", vec![r(1), r(2), r(3), r(5)])
                .unwrap(),
            3
        );
        assert!(t.message("Q005").unwrap().is_none());
        // An unreadable event's sequence counts; a gap standing for 5..=7 fills the hole.
        let batch = vec![Err(4), r(5), gap(7, 6, 7), r(8)];
        assert_eq!(t.ingest_blocking("w", "E", batch).unwrap(), 8);
        assert!(t.message("Q005").unwrap().is_some() && t.message("Q008").unwrap().is_some());
        // A gap that does not reach its own sequence is a hole like any other.
        assert_eq!(
            t.ingest_blocking("w", "E", vec![gap(12, 9, 10), r(13)])
                .unwrap(),
            8
        );
        assert_eq!(
            t.lost.load(Relaxed),
            2,
            "only the gap that was stored counts"
        );
        assert_eq!(t.stored_seq("w", "E").unwrap(), 8);
    });
}

#[test]
fn ingest_is_idempotent_and_searches_page_newest_first() {
    each_engine(|t| {
        let batch: Vec<Record> = (1..=30)
            .map(|i| {
                record(
                    i,
                    received(&format!("Q{i:03}"), i % 2 == 0, &["b@y.example"]),
                )
            })
            .collect();
        assert_eq!(t.ingest_blocking("w", "E", ok(&batch)).unwrap(), 30);
        // The same batch again, and an overlapping one: nothing is stored twice.
        assert_eq!(t.ingest_blocking("w", "E", ok(&batch)).unwrap(), 30);
        assert_eq!(t.ingest_blocking("w", "E", ok(&batch[20..])).unwrap(), 30);
        assert_eq!(t.count(), 30);
        assert_eq!(t.message("Q007").unwrap().unwrap().timeline.len(), 1);
        // A new epoch of the same worker starts its own sequence.
        assert_eq!(t.stored_seq("w", "F").unwrap(), 0);

        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let f = MessageFilter {
                recipient: Some("B@Y.example".into()),
                ..Default::default()
            };
            let (items, next) = t.search_messages(&f, 7, cursor.as_deref()).unwrap();
            pages.extend(items.into_iter().map(|m| m.id));
            match next {
                Some(c) => cursor = Some(query::decode_cursor(&c).unwrap()),
                None => break,
            }
        }
        let expected: Vec<String> = (1..=30).rev().map(|i| format!("Q{i:03}")).collect();
        assert_eq!(pages, expected, "newest first, each once");
        let tls = MessageFilter {
            tls: Some(true),
            status: Some(Status::Queued),
            since: Some(1_010),
            until: Some(1_020),
            ..Default::default()
        };
        let (items, _) = t.search_messages(&tls, 50, None).unwrap();
        assert_eq!(
            ids(&items),
            ["Q020", "Q018", "Q016", "Q014", "Q012", "Q010"]
        );
        let (none, _) = t
            .search_connections(&ConnectionFilter::default(), 10, None)
            .unwrap();
        assert!(none.is_empty());

        // Q020 is delivered: it moves from queued to delivered.
        let delivered = Event::Delivered(postern_events::Delivered {
            queue_id: "Q020".into(),
            recipient: "b@y.example".into(),
            reply: "250 ok".into(),
        });
        t.ingest_blocking("w", "E", vec![Ok(record(31, delivered))])
            .unwrap();
        let by_status = |status| MessageFilter {
            status: Some(status),
            ..Default::default()
        };
        let (items, _) = t
            .search_messages(&by_status(Status::Delivered), 50, None)
            .unwrap();
        assert_eq!(ids(&items), ["Q020"]);
        let (items, _) = t
            .search_messages(&by_status(Status::Queued), 50, None)
            .unwrap();
        assert_eq!(items.len(), 29);
        assert!(items.iter().all(|m| m.id != "Q020"));
        let m = t.message("Q020").unwrap().unwrap();
        assert_eq!(m.status, Status::Delivered);
        assert_eq!(m.timeline.len(), 2);
    });
}

/// Every filter of `GET /v1/messages`, alone and combined, from the database's indexes.
#[test]
fn every_filter_finds_what_it_names() {
    each_engine(|t| {
        let mut events = Vec::new();
        for i in 1..=40u64 {
            let id = format!("M{i:03}");
            let Event::Received(mut m) =
                received(&id, i % 3 != 0, &[&format!("r{}@Dest.example", i % 4)])
            else {
                unreachable!()
            };
            m.sender = format!("S{}@sender.example", i % 5);
            m.subject = Some(format!("Invoice {i} for ÖRDER {}", i * 7));
            m.message_id = Some(format!("{i}@client.example"));
            events.push(at(i, 1_000 + i, Event::Received(m)));
        }
        events.push(at(
            41,
            2_000,
            Event::Rejected(postern_events::Rejected {
                queue_id: "R001".into(),
                session: "S".into(),
                source: super::fold::tests::source(false),
                sender: "s1@sender.example".into(),
                recipient: None,
                reply: "530 5.7.0 Must issue a STARTTLS command first".into(),
                violation: Some(postern_events::Violation::MustUseTls),
            }),
        ));
        t.ingest_blocking("w1", "E", ok(&events)).unwrap();
        let other = vec![at(1, 3_000, received("X001", true, &["r1@dest.example"]))];
        t.ingest_blocking("w2", "E", ok(&other)).unwrap();
        let find = |f: MessageFilter| {
            let (items, next) = t.search_messages(&f, 100, None).unwrap();
            assert!(next.is_none());
            ids(&items)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let of = |ns: &[u64]| ns.iter().map(|i| format!("M{i:03}")).collect::<Vec<_>>();
        assert_eq!(
            find(MessageFilter {
                sender: Some("s2@SENDER.example".into()),
                ..Default::default()
            }),
            of(&[37, 32, 27, 22, 17, 12, 7, 2])
        );
        assert_eq!(
            find(MessageFilter {
                recipient: Some("R3@dest.EXAMPLE".into()),
                ..Default::default()
            }),
            of(&[39, 35, 31, 27, 23, 19, 15, 11, 7, 3])
        );
        // A substring of three characters or more, any case, over everything kept.
        assert_eq!(
            find(MessageFilter {
                subject: Some("invoice 3".into()),
                ..Default::default()
            }),
            of(&[39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 3])
        );
        assert_eq!(
            find(MessageFilter {
                subject: Some("e 1 f".into()),
                ..Default::default()
            }),
            of(&[1])
        );
        // Shorter than three: still every match.
        assert_eq!(
            find(MessageFilter {
                subject: Some("e 2".into()),
                sender: Some("s2@sender.example".into()),
                ..Default::default()
            }),
            of(&[27, 22, 2])
        );
        assert_eq!(
            find(MessageFilter {
                subject: Some("4 ".into()),
                ..Default::default()
            }),
            of(&[34, 24, 14, 4])
        );
        assert_eq!(
            find(MessageFilter {
                queue_id: Some("M007".into()),
                ..Default::default()
            }),
            of(&[7])
        );
        assert_eq!(
            find(MessageFilter {
                message_id: Some("8@client.example".into()),
                ..Default::default()
            }),
            of(&[8])
        );
        assert_eq!(
            find(MessageFilter {
                worker: Some("w2".into()),
                ..Default::default()
            }),
            ["X001"]
        );
        assert_eq!(
            find(MessageFilter {
                violation: Some(true),
                ..Default::default()
            }),
            ["R001"]
        );
        assert_eq!(
            find(MessageFilter {
                status: Some(Status::Rejected),
                ..Default::default()
            }),
            ["R001"]
        );
        assert_eq!(
            find(MessageFilter {
                plaintext: Some(true),
                since: Some(1_030),
                ..Default::default()
            }),
            ["R001".to_string()]
                .into_iter()
                .chain(of(&[39, 36, 33, 30]))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            find(MessageFilter {
                tls: Some(false),
                violation: Some(false),
                ..Default::default()
            }),
            of(&[39, 36, 33, 30, 27, 24, 21, 18, 15, 12, 9, 6, 3])
        );
        assert_eq!(
            find(MessageFilter {
                sender: Some("s1@sender.example".into()),
                status: Some(Status::Queued),
                tls: Some(true),
                since: Some(1_010),
                until: Some(1_035),
                ..Default::default()
            }),
            of(&[31, 26, 16, 11])
        );
        assert_eq!(
            find(MessageFilter {
                subject: Some("no such".into()),
                ..Default::default()
            }),
            Vec::<String>::new()
        );
    });
}

/// A message retried for days: its record stays small, the newest timeline entries are kept,
/// each written once.
#[test]
fn a_long_history_keeps_the_newest_timeline() {
    each_engine(|t| {
        let deferral = |seq: u64| {
            record(
                seq,
                Event::Deferred(postern_events::Deferred {
                    queue_id: "Q".into(),
                    recipient: "b@y".into(),
                    reason: "451 4.3.0 later".into(),
                    next_attempt_ms: seq,
                    violation: None,
                }),
            )
        };
        t.ingest_blocking("w", "E", ok(&[record(1, received("Q", true, &["b@y"]))]))
            .unwrap();
        let record_size = || {
            t.db.read(|c| c.one_int("SELECT length(record) FROM messages", &[]))
                .unwrap()
                .unwrap()
        };
        let small = record_size();
        // One event per batch, as a message retried for days sends them.
        for seq in 2..=1_200 {
            t.ingest_blocking("w", "E", ok(&[deferral(seq)])).unwrap();
        }
        assert!(record_size() < small + 1024, "{} vs {small}", record_size());
        let m = t.message("Q").unwrap().unwrap();
        assert_eq!(m.timeline.len(), fold::MAX_TIMELINE);
        assert_eq!(m.timeline_dropped, 1_200 - fold::MAX_TIMELINE as u64);
        assert_eq!(
            m.timeline.back().unwrap().detail.split(';').next(),
            Some("<b@y>: 451 4.3.0 later")
        );
        assert!(m.timeline.front().unwrap().at_ms < m.timeline.back().unwrap().at_ms);
        let chunks =
            t.db.read(|c| c.one_int("SELECT count(*) FROM timeline", &[]))
                .unwrap()
                .unwrap() as usize;
        assert!(
            chunks <= fold::MAX_TIMELINE / messages::CHUNK + 2,
            "{chunks} chunks"
        );
    });
}

#[test]
fn retention_removes_by_age_then_by_size() {
    each_engine(|t| {
        // A hundred messages on each of three days.
        let batch: Vec<Record> = (0..300)
            .map(|i| {
                let id = format!("Q{i:03}");
                at(
                    i + 1,
                    (i / 100) * DAY + 1_000 + i,
                    received(&id, false, &["b@y.example"]),
                )
            })
            .collect();
        t.ingest_blocking("w", "E", ok(&batch)).unwrap();
        // Retention of one day at the start of day 2: day 0 goes.
        let (removed, _) = t.enforce(1, u64::MAX, 2 * DAY).unwrap();
        assert_eq!(removed, 100);
        assert!(t.message("Q099").unwrap().is_none());
        assert!(t.message("Q100").unwrap().is_some());
        let f = MessageFilter {
            recipient: Some("b@y.example".into()),
            ..Default::default()
        };
        let (items, _) = t.search_messages(&f, 500, None).unwrap();
        assert_eq!(items.len(), 200, "index entries went with the messages");
        if t.engine() == Engine::Postgres {
            // Day 1 is over: its partitions were compacted, and still answer.
            let compacted =
                t.db.read(|c| c.rows("SELECT day FROM compacted", &[], |r| r.int(0)))
                    .unwrap();
            assert_eq!(compacted, [1]);
            assert!(t.message("Q150").unwrap().is_some());
        }
        // Over the size limit: the oldest go (a hundred on SQLite, the oldest day on
        // PostgreSQL: the same hundred here), never everything.
        let (removed, _) = t.enforce(3650, 1, 2 * DAY).unwrap();
        assert_eq!(removed, 100);
        assert!(t.message("Q199").unwrap().is_none());
        assert!(t.message("Q200").unwrap().is_some());
        assert_eq!(t.count(), 100);
    });
}

/// Received reports and connections are measured apart: however much they take, message
/// tracking's size budget never counts them.
#[test]
fn reports_and_connections_never_push_messages_out() {
    each_engine(|t| {
        let batch: Vec<Record> = (1..=50)
            .map(|i| record(i, received(&format!("Q{i:03}"), false, &["b@y"])))
            .collect();
        t.ingest_blocking("w", "E", ok(&batch)).unwrap();
        t.measure().unwrap();
        let before = t.size_on_disk();
        for i in 0..40 {
            let json = format!(
                r#"{{"organization-name":"O{i}","date-range":{{"start-datetime":"2026-12-06T00:00:00Z","end-datetime":"2026-12-06T23:59:59Z"}},"contact-info":"{}","report-id":"r{i}","policies":[{{"policy":{{"policy-type":"no-policy-found","policy-domain":"ours.test"}},"summary":{{"total-successful-session-count":1,"total-failure-session-count":0}}}}]}}"#,
                "c".repeat(100_000)
            );
            let r = crate::reports::received::read(
                json.as_bytes(),
                crate::reports::received::Via::Https,
                "t",
                |_| true,
            )
            .unwrap();
            t.put_received(r, u64::MAX).unwrap();
        }
        assert_eq!(t.received(None, 100, None).unwrap().0.len(), 40);
        let (removed, _) = t.enforce(3650, before + 1_000_000, 2_000).unwrap();
        assert_eq!(removed, 0, "no message went because reports grew");
        assert!(
            t.size_on_disk() < before + 1_000_000,
            "{} vs {before}",
            t.size_on_disk()
        );

        // Nor because connections grew: they are measured and trimmed on their own.
        let connections: Vec<Record> = (51..=2_050)
            .map(|i| {
                record(
                    i,
                    Event::Connection(postern_events::Connection {
                        session: format!("S{i}"),
                        ip: "192.0.2.9".into(),
                        started_ms: 1_000 + i + (i % 2) * DAY,
                        helo: Some("h".repeat(200)),
                        tls: None,
                        tls_failure: None,
                        refused: None,
                        messages: 0,
                        starttls_leftovers: 0,
                        refused_count: 0,
                    }),
                )
            })
            .collect();
        t.ingest_blocking("w", "E", ok(&connections)).unwrap();
        let f = ConnectionFilter {
            ip: Some("192.0.2.9".into()),
            ..Default::default()
        };
        let (page, next) = t.search_connections(&f, 10, None).unwrap();
        assert_eq!(page.len(), 10);
        assert!(page[0].started_ms > page[9].started_ms && next.is_some());
        let (messages, connections) = t
            .enforce_apart(3650, before + 1_000_000, 1, 2 * DAY)
            .unwrap();
        assert_eq!(messages, 0, "no message went because connections grew");
        assert!(connections >= 100, "{connections}");
        assert_eq!(t.count(), 50);
    });
}

#[test]
fn known_mta_sts_policies_go_when_expired() {
    each_engine(|t| {
        let policy = |seq: u64, domain: &str, max_age: u64, fetched_ms: u64| {
            Ok(record(
                seq,
                Event::StsPolicy(postern_events::StsPolicy {
                    domain: domain.into(),
                    id: format!("{fetched_ms}"),
                    mode: postern_events::Mode::Enforce,
                    max_age,
                    mx: vec![postern_events::MxPattern::parse("mx.x").unwrap()],
                    fetched_ms,
                }),
            ))
        };
        let batch = vec![
            policy(1, "short.example", 60, 1_000),
            policy(2, "long.example", 86_400, 1_000),
            // An older fetch does not replace a newer one.
            policy(3, "long.example", 86_400, 500),
        ];
        t.ingest_blocking("w", "E", batch).unwrap();
        assert_eq!(t.sts_policy("long.example").unwrap().unwrap().id, "1000");
        t.enforce(3650, u64::MAX, 1_000 + 61_000).unwrap();
        assert!(t.sts_policy("short.example").unwrap().is_none());
        assert!(t.sts_policy("long.example").unwrap().is_some());
    });
}

/// A session's policy is stored once per (day, domain, id), and a day's reports are built
/// one domain at a time from what is stored.
#[test]
fn tls_sessions_store_their_policy_once() {
    each_engine(|t| {
        let day_ms = 86_400_000 * 20_000;
        let session = |seq: u64, domain: &str, result: Option<&str>| {
            Ok(record(
                seq,
                Event::TlsSession(postern_events::TlsSession {
                    domain: domain.into(),
                    sts: Some(postern_events::SessionPolicy {
                        id: "20261207".into(),
                        lines: (0..20).map(|i| format!("mx: mx{i}.{domain}")).collect(),
                        mx: vec![postern_events::MxPattern::parse(&format!("*.{domain}")).unwrap()],
                    }),
                    result: result.map(|r| postern_events::ResultType::parse(r).unwrap()),
                    sending_ip: Some("192.0.2.1".into()),
                    receiving_mx: Some(format!("mx.{domain}")),
                    receiving_ip: Some("198.51.100.7".into()),
                    at_ms: day_ms + seq,
                }),
            ))
        };
        let batch: Vec<_> = (1..=300)
            .map(|seq| {
                let domain = if seq % 3 == 0 {
                    "b.example"
                } else {
                    "a.example"
                };
                session(
                    seq,
                    domain,
                    (seq % 10 == 0).then_some("certificate-expired"),
                )
            })
            .collect();
        t.ingest_blocking("w", "E", batch).unwrap();
        let policies =
            t.db.read(|c| c.one_int("SELECT count(*) FROM tls_policies", &[]))
                .unwrap();
        assert_eq!(policies, Some(2), "one policy per domain and id");
        let mut reports = Vec::new();
        t.sessions_by_domain(&day_of(day_ms), &mut |domain, aggregate| {
            let header = postern_sts::tlsrpt::ReportHeader {
                organization_name: "o".into(),
                contact_info: "c@o".into(),
                report_id: domain.clone(),
                start_datetime: String::new(),
                end_datetime: String::new(),
            };
            reports.push(aggregate.report(header, &domain));
        })
        .unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].session_counts(), (180, 20), "a.example");
        assert_eq!(reports[1].session_counts(), (90, 10), "b.example");
        assert_eq!(reports[0].policies[0].policy.policy_string.len(), 20);
        assert_eq!(reports[0].policies[0].policy.mx_host, ["*.a.example"]);
        // Built reports: stored per day and domain, a rebuild replacing them.
        t.put_reports("2026-12-06", &[("a.example".into(), b"1".to_vec())])
            .unwrap();
        t.put_reports(
            "2026-12-07",
            &[
                ("a.example".into(), b"2".to_vec()),
                ("b.example".into(), b"3".to_vec()),
            ],
        )
        .unwrap();
        t.put_reports("2026-12-07", &[("a.example".into(), b"4".to_vec())])
            .unwrap();
        assert_eq!(
            t.reports(None, None).unwrap(),
            [b"3".to_vec(), b"4".to_vec(), b"1".to_vec()]
        );
        assert_eq!(
            t.reports(None, Some("a.example")).unwrap(),
            [b"4".to_vec(), b"1".to_vec()]
        );
        assert_eq!(
            t.reports(Some("2026-12-06"), None).unwrap(),
            [b"1".to_vec()]
        );
    });
}

fn report(org: &str, n: u32) -> ReceivedReport {
    ReceivedReport {
        id: String::new(),
        organization_name: org.into(),
        report_id: "same-id".into(),
        start_datetime: "2026-12-06T00:00:00Z".into(),
        end_datetime: "2026-12-06T23:59:59Z".into(),
        contact_info: "x@y".into(),
        received_ms: 1_765_065_600_000,
        via: crate::reports::received::Via::Https,
        source: "t".into(),
        policy_domains: vec!["ours.test".into()],
        successful_sessions: n.into(),
        failed_sessions: 0,
        report: serde_json::json!({"n": n, "organization-name": org}),
    }
}

#[test]
fn received_reports_keep_their_own_ids_page_newest_first_and_stay_on_budget() {
    each_engine(|t| {
        let mut ids = Vec::new();
        for n in 0..5 {
            let org = if n % 2 == 0 { "Even" } else { "Odd" };
            match t.put_received(report(org, n), 1 << 20).unwrap() {
                Kept::New(id) => ids.push(id),
                other => panic!("{other:?}"),
            }
        }
        // The same report-id with other contents (a forgery, say) is kept beside, never over;
        // the same bytes again are kept once.
        assert_eq!(
            t.put_received(report("Even", 0), 1 << 20).unwrap(),
            Kept::Again(ids[0].clone())
        );
        let page_ids = |org, cursor: Option<&str>| {
            let (page, next) = t.received(org, 2, cursor).unwrap();
            (page.into_iter().map(|r| r.id).collect::<Vec<_>>(), next)
        };
        let (page, next) = page_ids(None, None);
        assert_eq!(page, [ids[4].clone(), ids[3].clone()]);
        let (page, next) = page_ids(None, next.as_deref());
        assert_eq!(page, [ids[2].clone(), ids[1].clone()]);
        let (page, next) = page_ids(None, next.as_deref());
        assert_eq!(page, [ids[0].clone()]);
        assert!(next.is_none());
        let (even, next) = page_ids(Some("Even"), None);
        assert_eq!(even, [ids[4].clone(), ids[2].clone()]);
        let (even, _) = page_ids(Some("Even"), next.as_deref());
        assert_eq!(even, [ids[0].clone()]);
        // The budget: nothing more once it is spent; retention frees it.
        let used =
            t.db.read(|c| {
                c.one_int(
                    "SELECT CAST(sum(bytes) AS BIGINT) FROM received_reports",
                    &[],
                )
            })
            .unwrap()
            .unwrap() as u64;
        assert_eq!(t.put_received(report("Odd", 99), used).unwrap(), Kept::Full);
        t.enforce(1, u64::MAX, (1 << 48) - 1 + DAY).unwrap();
        assert!(t.received(None, 10, None).unwrap().0.is_empty());
        assert!(matches!(
            t.put_received(report("Odd", 99), used).unwrap(),
            Kept::New(_)
        ));
    });
}

/// A database made by the previous schema version is brought up to date at start, what it
/// holds searchable by what the new version adds; a newer one is refused.
#[test]
fn an_older_schema_is_migrated_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut locations = vec![Location::Sqlite(dir.path().join("tracking.sqlite"))];
    if let Some(url) = postern_testpg::database() {
        locations.push(Location::Postgres(url));
    }
    for location in locations {
        {
            let t = Tracking::over(Db::open_at(&location, schema::LATEST - 1).unwrap()).unwrap();
            let mut s = fold::Stored::new("OLD1", "w", 5_000);
            s.apply("w", "E", &record(1, received("OLD1", true, &["b@y"])));
            s.message.subject = Some("Quarterly figures".into());
            // Rows as the previous version wrote them (in its day partitions, on PostgreSQL).
            sql::retention::ensure_days(&t.db, &mut Default::default(), &[0]).unwrap();
            let sql = format!(
                "{} VALUES {}",
                messages::INSERT,
                sql::Conn::values(1, messages::COLUMN_COUNT)
            );
            t.db.write(|c| c.execute(&sql, &messages::row(messages::key_at(5_000), &s)))
                .unwrap();
        }
        let t = Tracking::connect(&location).unwrap();
        let version = t.db.read(schema::version).unwrap();
        assert_eq!(version, schema::LATEST);
        let f = MessageFilter {
            subject: Some("QUARTERLY".into()),
            ..Default::default()
        };
        let (items, _) = t.search_messages(&f, 10, None).unwrap();
        assert_eq!(ids(&items), ["OLD1"], "{}", location.describe());
        t.db.write(|c| c.execute("UPDATE schema_version SET version = 99", &[]))
            .unwrap();
        drop(t);
        match Tracking::connect(&location) {
            Err(TrackingError::Newer { found: 99, known }) => assert_eq!(known, schema::LATEST),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
    }
}

use sql::schema;

/// A sled tracking store as releases before SQL wrote it: its trees and their JSON records.
fn sled_store(dir: &std::path::Path) {
    let main = sled::open(dir).unwrap();
    let messages = main.open_tree("messages").unwrap();
    let timeline = main.open_tree("messages/timeline").unwrap();
    // A message with a long timeline beside its record, and one (older) holding it inline.
    let mut long = fold::Stored::new("LONG", "w", 5_000);
    long.apply(
        "w",
        "E",
        &record(1, received("LONG", true, &["b@y.example"])),
    );
    for seq in 2..=40 {
        long.apply(
            "w",
            "E",
            &record(
                seq,
                Event::Deferred(postern_events::Deferred {
                    queue_id: "LONG".into(),
                    recipient: "b@y.example".into(),
                    reason: "451 4.3.0 later".into(),
                    next_attempt_ms: seq,
                    violation: None,
                }),
            ),
        );
    }
    for (n, entry) in long.message.timeline.drain(..).enumerate() {
        let mut key = b"LONG\0".to_vec();
        key.extend_from_slice(&(n as u64).to_be_bytes());
        timeline.insert(key, json(&entry)).unwrap();
    }
    messages.insert("LONG", json(&long)).unwrap();
    let mut inline = fold::Stored::new("INLINE", "w", 6_000);
    inline.apply(
        "w",
        "E",
        &at(41, 6_000, received("INLINE", false, &["c@y.example"])),
    );
    messages.insert("INLINE", json(&inline)).unwrap();
    let cursors = main.open_tree("cursors").unwrap();
    cursors.insert(b"w\0E", &41u64.to_be_bytes()).unwrap();
    main.open_tree("gaps")
        .unwrap()
        .insert(b"w\0E", &3u64.to_be_bytes())
        .unwrap();
    main.flush().unwrap();

    let conn_db = sled::open(dir.join("connections")).unwrap();
    let connections = conn_db.open_tree("connections").unwrap();
    for i in 0..3u64 {
        let c = record::ConnectionRecord::new(
            "w",
            1,
            &postern_events::Connection {
                session: format!("S{i}"),
                ip: "192.0.2.44".into(),
                started_ms: 7_000 + i,
                helo: Some("h.example".into()),
                tls: None,
                tls_failure: None,
                refused: None,
                messages: 1,
                starttls_leftovers: 0,
                refused_count: 0,
            },
        );
        connections.insert(format!("k{i}"), json(&c)).unwrap();
    }
    conn_db.flush().unwrap();

    let tls_db = sled::open(dir.join("tlsrpt")).unwrap();
    let mut key = b"1970-01-01\0a.example\0w\0E\0".to_vec();
    key.extend_from_slice(&9u64.to_be_bytes());
    let session = sql::tlsrpt::StoredSession {
        domain: "a.example".into(),
        policy_id: Some("p1".into()),
        sts: None,
        result: None,
        sending_ip: Some("192.0.2.1".into()),
        receiving_mx: Some("mx.a.example".into()),
        receiving_ip: None,
    };
    tls_db
        .open_tree("tlsrpt/sessions")
        .unwrap()
        .insert(key, json(&session))
        .unwrap();
    let policy = sql::tlsrpt::StoredPolicy {
        lines: vec!["version: STSv1".into(), "mode: enforce".into()],
        mx: vec![postern_events::MxPattern::parse("mx.a.example").unwrap()],
    };
    tls_db
        .open_tree("tlsrpt/policies")
        .unwrap()
        .insert("1970-01-01\0a.example\0p1", json(&policy))
        .unwrap();
    tls_db
        .open_tree("tlsrpt/reports")
        .unwrap()
        .insert("1970-01-01\0a.example", &b"{\"built\":1}"[..])
        .unwrap();
    tls_db.flush().unwrap();

    let received_db = sled::open(dir.join("received")).unwrap();
    let mut r = report("Big Mail", 3);
    r.id = ulid::Ulid::from_parts(1_765_065_600_000, 1).to_string();
    received_db
        .open_tree("reports")
        .unwrap()
        .insert(r.id.as_bytes(), json(&r))
        .unwrap();
    received_db.flush().unwrap();

    let sts_db = sled::open(dir.join("sts")).unwrap();
    let known = sts::KnownSts {
        domain: "partner.example".into(),
        id: "20261207".into(),
        mode: postern_events::Mode::Enforce,
        max_age: 86_400,
        mx: vec![postern_events::MxPattern::parse("*.partner.example").unwrap()],
        fetched_ms: 1_000,
        worker: "w".into(),
    };
    sts_db
        .open_tree("sts_policies")
        .unwrap()
        .insert("partner.example", json(&known))
        .unwrap();
    sts_db.flush().unwrap();
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn a_sled_store_is_imported_once_with_everything_it_held() {
    let sled_dir = tempfile::tempdir().unwrap();
    sled_store(sled_dir.path());
    each_engine(|t| {
        let mut heard = Vec::new();
        let done = import::import_sled(sled_dir.path(), t, &mut |what, _| {
            heard.push(what.to_string())
        })
        .unwrap();
        assert_eq!(
            done,
            import::Imported {
                messages: 2,
                new_messages: 2,
                connections: 3,
                tls_sessions: 1,
                tls_reports: 1,
                received_reports: 1,
                sts_policies: 1,
                cursors: 1,
            }
        );
        assert!(heard.contains(&"messages".to_string()));
        let long = t.message("LONG").unwrap().unwrap();
        assert_eq!(long.timeline.len(), 40);
        assert_eq!(long.status, Status::Deferred);
        assert_eq!(t.message("INLINE").unwrap().unwrap().timeline.len(), 1);
        let f = MessageFilter {
            recipient: Some("b@y.example".into()),
            ..Default::default()
        };
        assert_eq!(ids(&t.search_messages(&f, 10, None).unwrap().0), ["LONG"]);
        let f = ConnectionFilter {
            ip: Some("192.0.2.44".into()),
            ..Default::default()
        };
        assert_eq!(t.search_connections(&f, 10, None).unwrap().0.len(), 3);
        let mut domains = Vec::new();
        t.sessions_by_domain("1970-01-01", &mut |d, a| {
            let header = postern_sts::tlsrpt::ReportHeader {
                organization_name: "o".into(),
                contact_info: "c".into(),
                report_id: "r".into(),
                start_datetime: String::new(),
                end_datetime: String::new(),
            };
            let report = a.report(header, &d);
            assert_eq!(report.policies[0].policy.policy_string.len(), 2);
            domains.push(d);
        })
        .unwrap();
        assert_eq!(domains, ["a.example"]);
        assert_eq!(t.reports(None, None).unwrap(), [b"{\"built\":1}".to_vec()]);
        assert_eq!(t.received(None, 10, None).unwrap().0.len(), 1);
        assert!(t.sts_policy("partner.example").unwrap().is_some());
        assert_eq!(t.stored_seq("w", "E").unwrap(), 41);

        // Again: nothing twice.
        let again = import::import_sled(sled_dir.path(), t, &mut |_, _| {}).unwrap();
        assert_eq!(again.new_messages, 0);
        assert_eq!(t.count(), 2);
        assert_eq!(t.search_connections(&f, 10, None).unwrap().0.len(), 3);
        assert_eq!(t.received(None, 10, None).unwrap().0.len(), 1);
        // A worker replaying what the old store acknowledged changes nothing.
        let replay = vec![Ok(record(41, received("INLINE", false, &["c@y.example"])))];
        assert_eq!(t.ingest_blocking("w", "E", replay).unwrap(), 41);
        assert_eq!(t.message("INLINE").unwrap().unwrap().timeline.len(), 1);
    });
}

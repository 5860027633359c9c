//! The REST API against a real sled store: docs/src/interfaces.md conventions and the bad input of
//! issue 2.

mod common;

use axum::http::StatusCode;
use common::Api;
use serde_json::{Value, json};

const RULES: &str = "/v1/policy/inbound/rules";

async fn version(api: &Api) -> u64 {
    api.get("/v1/policy").await.body["version"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn bad_input_is_refused_and_stores_nothing() {
    let api = Api::new().await;
    let before = version(&api).await;
    let cases: &[(&str, u16, &str)] = &[
        ("{not json", 400, ""),
        (r#"{"match": "10.0.0.0/8"}"#, 400, ""),
        (
            r#"{"match": "10.0.0.0/8", "level": "sometimes"}"#,
            400,
            "/level",
        ),
        (
            r#"{"match": "10.0.0.0/8", "level": "may", "colour": "red"}"#,
            400,
            "",
        ),
        (r#"{"match": 17, "level": "may"}"#, 400, "/match"),
        (r#"{"match": "10.0.0.0/33", "level": "may"}"#, 422, "/match"),
        (r#"{"match": "10.0.0.1/8", "level": "may"}"#, 422, "/match"),
        (
            r#"{"match": "a..example.com", "level": "may"}"#,
            422,
            "/match",
        ),
        (
            r#"{"match": "exa mple.com", "level": "may"}"#,
            422,
            "/match",
        ),
        (r#"{"match": "", "level": "may"}"#, 422, "/match"),
        (
            r#"{"match": "example.com", "level": "verify"}"#,
            422,
            "/level",
        ),
    ];
    for (body, status, pointer) in cases {
        let r = api
            .call("POST", RULES, Some(&api.admin), Some(body), &[])
            .await;
        assert_eq!(r.status.as_u16(), *status, "{body}: {:?}", r.body);
        assert_eq!(
            r.headers["content-type"], "application/problem+json",
            "{body}"
        );
        assert_eq!(r.body["status"].as_u64(), Some(u64::from(*status)));
        if !pointer.is_empty() {
            assert_eq!(r.pointers(), [*pointer], "{body}: {:?}", r.body);
        }
    }
    let long = format!("{}.example", vec!["a".repeat(63); 4].join("."));
    let r = api
        .post(RULES, json!({"match": long, "level": "may"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("253")
    );
    let r = api
        .post(
            "/v1/policy/outbound/rules",
            json!({"match": "192.0.2.1", "level": "may"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        version(&api).await,
        before,
        "a refused write made a version"
    );
    assert_eq!(api.get(RULES).await.body["items"], json!([]));
}

#[tokio::test]
async fn matches_are_normalised_and_duplicates_refused() {
    let api = Api::new().await;
    let r = api
        .post(
            RULES,
            json!({"match": "Bücher.Example.", "level": "encrypt", "enabled": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["match"], "xn--bcher-kva.example");
    // The same match in another spelling is a duplicate, though the first rule is disabled.
    for dup in ["xn--bcher-kva.example", "BÜCHER.example"] {
        let r = api.post(RULES, json!({"match": dup, "level": "may"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{dup}");
        assert_eq!(r.pointers(), ["/match"]);
    }
    let r = api
        .post(RULES, json!({"match": "10.0.0.1", "level": "may"}))
        .await;
    assert_eq!(r.body["match"], "10.0.0.1/32");
    for dup in ["10.0.0.1/32", "::ffff:10.0.0.1"] {
        assert_eq!(
            api.post(RULES, json!({"match": dup, "level": "may"}))
                .await
                .status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let r = api
        .post(
            RULES,
            json!({"match": "::ffff:10.1.0.0/112", "level": "may"}),
        )
        .await;
    assert_eq!(r.body["match"], "10.1.0.0/16");
    // The same match may appear once in each direction.
    let r = api
        .post(
            "/v1/policy/outbound/rules",
            json!({"match": "bücher.example", "level": "verify"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn rule_lifecycle_with_etags() {
    let api = Api::new().await;
    let created = api
        .post(
            RULES,
            json!({"match": "192.0.2.0/24", "level": "encrypt", "comment": "partner"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_string();
    let path = format!("{RULES}/{id}");
    assert_eq!(created.headers["location"], path.as_str());
    let got = api.get(&path).await;
    assert_eq!(got.etag(), created.etag());
    assert_eq!(got.body["comment"], "partner");

    let update =
        json!({"match": "192.0.2.0/24", "level": "verify", "cipher_strength": "high"}).to_string();
    // Trust is empty, so an enabled verify rule is refused.
    let r = api
        .call(
            "PUT",
            &path,
            Some(&api.admin),
            Some(&update),
            &[("if-match", &got.etag())],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);

    let update =
        json!({"match": "192.0.2.0/24", "level": "encrypt", "cipher_strength": "high"}).to_string();
    let r = api
        .call(
            "PUT",
            &path,
            Some(&api.admin),
            Some(&update),
            &[("if-match", &got.etag())],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_ne!(r.etag(), got.etag());
    // The old ETag is stale now.
    let stale = api
        .call(
            "PUT",
            &path,
            Some(&api.admin),
            Some(&update),
            &[("if-match", &got.etag())],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let stale = api
        .call(
            "DELETE",
            &path,
            Some(&api.admin),
            None,
            &[("if-match", &got.etag())],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let r = api
        .call(
            "DELETE",
            &path,
            Some(&api.admin),
            None,
            &[("if-match", &r.etag())],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.delete(&path).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tokens_roles_and_audit() {
    let api = Api::new().await;
    assert_eq!(
        api.call("GET", "/v1/policy", None, None, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = api
        .call("GET", "/v1/policy", Some("pst_wrong"), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer");

    let viewer = api
        .post(
            "/v1/tokens",
            json!({"role": "viewer", "comment": "dashboards"}),
        )
        .await;
    assert_eq!(viewer.status, StatusCode::CREATED);
    let secret = viewer.body["token"].as_str().unwrap();
    assert_eq!(
        api.call("GET", "/v1/policy", Some(secret), None, &[])
            .await
            .status,
        StatusCode::OK
    );
    let write = api
        .call(
            "POST",
            RULES,
            Some(secret),
            Some(r#"{"match":"example.com","level":"may"}"#),
            &[],
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    assert_eq!(
        api.call("GET", "/v1/tokens", Some(secret), None, &[])
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let list = api.get("/v1/tokens").await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
    assert!(
        list.body.to_string().find(secret).is_none(),
        "a secret was listed"
    );
    // The last admin token cannot be deleted.
    let admin_id = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        api.delete(&format!("/v1/tokens/{admin_id}")).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let viewer_id = viewer.body["id"].as_str().unwrap();
    assert_eq!(
        api.delete(&format!("/v1/tokens/{viewer_id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call("GET", "/v1/policy", Some(secret), None, &[])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let audit = api.get("/v1/audit").await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions[0], format!("DELETE /v1/tokens/{viewer_id}"));
    assert_eq!(actions[1], "POST /v1/tokens");
    assert!(
        !actions.iter().any(|a| a.starts_with("POST /v1/policy")),
        "a refused write was audited"
    );
}

#[tokio::test]
async fn replace_all_is_one_version_and_keeps_ids_of_unchanged_matches() {
    let api = Api::new().await;
    let kept = api
        .post(RULES, json!({"match": "example.com", "level": "may"}))
        .await
        .body["id"]
        .clone();
    api.post(RULES, json!({"match": "gone.example", "level": "may"}))
        .await;
    let before = version(&api).await;
    let etag = api.get(RULES).await.etag();
    let body = json!({"items": [
        {"match": "EXAMPLE.com", "level": "encrypt"},
        {"match": "10.0.0.0/8", "level": "none"},
        {"match": ".example.net", "level": "none"},
    ]});
    let r = api
        .call(
            "PUT",
            RULES,
            Some(&api.admin),
            Some(&body.to_string()),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(version(&api).await, before + 1);
    let items = api.get(RULES).await.body["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 3);
    let ids: Vec<&Value> = items.as_array().unwrap().iter().map(|r| &r["id"]).collect();
    assert!(ids.contains(&&kept));
    assert!(
        r.body["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "sender_rule_none")
    );
    // A stale list ETag, and a list with a duplicate or a bad item, change nothing.
    let r = api
        .call(
            "PUT",
            RULES,
            Some(&api.admin),
            Some(&body.to_string()),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let bad = json!({"items": [{"match": "a.example", "level": "may"}, {"match": "10.0.0.0/33", "level": "may"}, {"match": "A.example.", "level": "none"}]});
    let r = api.put(RULES, bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.pointers(), ["/items/1/match", "/items/2/match"]);
    assert_eq!(version(&api).await, before + 1);
}

#[tokio::test]
async fn pagination() {
    let api = Api::new().await;
    let items: Vec<Value> = (0..25)
        .map(|i| json!({"match": format!("d{i}.example"), "level": "may"}))
        .collect();
    api.put(RULES, json!({"items": items})).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{RULES}?limit=10&cursor={c}"),
            None => format!("{RULES}?limit=10"),
        };
        let page = api.get(&path).await;
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["match"].as_str().unwrap().to_string()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(
        api.get(&format!("{RULES}?limit=0")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.get(&format!("{RULES}?limit=ten")).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn versions_and_rollback() {
    let api = Api::new().await;
    let a = api
        .post(RULES, json!({"match": "a.example", "level": "encrypt"}))
        .await
        .body["id"]
        .clone();
    let v_a = version(&api).await;
    api.put("/v1/policy/inbound/default", json!({"level": "encrypt"}))
        .await;
    api.post(RULES, json!({"match": "b.example", "level": "none"}))
        .await;
    api.delete(&format!("{RULES}/{}", a.as_str().unwrap()))
        .await;
    api.put(
        "/v1/relay",
        json!({"domains": [{"domain": "example.org", "next_hop": "mx"}], "networks": []}),
    )
    .await;
    let current = version(&api).await;
    let r = api
        .post("/v1/policy/rollback", json!({"version": v_a}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["version"].as_u64(), Some(current + 1));
    let policy = api.get("/v1/policy").await.body;
    assert_eq!(policy["inbound"]["rules"].as_array().unwrap().len(), 1);
    assert_eq!(
        policy["inbound"]["rules"][0]["id"], a,
        "rollback restores the rule with its id"
    );
    assert_eq!(policy["inbound"]["default"]["level"], "may");
    assert_eq!(policy["relay"]["domains"], json!([]));
    let versions = api.get("/v1/policy/versions").await.body;
    assert_eq!(versions["current"].as_u64(), Some(current + 1));
    assert!(
        versions["items"][0]["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("roll back to version {v_a}"))
    );
    for bad in [0, current + 1, current + 50] {
        assert_eq!(
            api.post("/v1/policy/rollback", json!({"version": bad}))
                .await
                .status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}

#[tokio::test]
async fn state_survives_reopen() {
    let api = Api::new().await;
    let id = api
        .post(
            RULES,
            json!({"match": ".bank.example", "level": "encrypt", "cipher_strength": "high"}),
        )
        .await
        .body["id"]
        .clone();
    api.put("/v1/settings", json!({"smtp": {"max_recipients": 10}}))
        .await;
    let before = api.get("/v1/policy").await.body;
    let Api {
        dir,
        control,
        router,
        admin,
    } = api;
    drop((control, router));
    // sled's files are released once every handle is gone, including the flusher task's.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let api = Api::open(dir).await;
    assert_eq!(api.admin, admin);
    assert_eq!(api.get("/v1/policy").await.body, before);
    assert_eq!(
        api.get(&format!("{RULES}/{}", id.as_str().unwrap()))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        api.get("/v1/settings").await.body["smtp"]["max_recipients"],
        10
    );
}

#[tokio::test]
async fn settings_relay_and_trust() {
    let api = Api::new().await;
    let s = api.get("/v1/settings").await;
    assert_eq!(s.body["smtp"]["max_command_line"], 512);
    assert_eq!(s.body["smtp"]["max_line"], 1000);
    assert_eq!(s.body["smtp"]["max_message_size"], 26_214_400);
    assert_eq!(s.body["smtp"]["max_recipients"], 1000);
    assert_eq!(s.body["smtp"]["command_timeout_s"], 300);
    assert_eq!(s.body["smtp"]["max_sessions_per_ip"], 50);
    assert_eq!(
        s.body["queue"],
        json!({"first_retry_s": 300, "max_retry_s": 3600, "lifetime_s": 432000})
    );
    let r = api
        .put(
            "/v1/settings",
            json!({"queue": {"first_retry_s": 10, "max_retry_s": 5}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.pointers(), ["/queue/max_retry_s"]);
    let r = api
        .put(
            "/v1/settings",
            json!({"tracking": {"outbox_max_bytes": 1_000_000}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.pointers(), ["/tracking/outbox_max_bytes"]);
    let r = api
        .put("/v1/settings", json!({"smtp": {"max_recipients": "many"}}))
        .await;
    assert_eq!(
        (r.status, r.pointers()),
        (
            StatusCode::BAD_REQUEST,
            vec!["/smtp/max_recipients".to_string()]
        )
    );
    let r = api
        .put(
            "/v1/settings",
            json!({"delivery": {"nameservers": ["127.0.0.1:5353", "::1"]}}),
        )
        .await;
    assert_eq!(
        r.body["delivery"]["nameservers"],
        json!(["127.0.0.1:5353", "[::1]:53"])
    );

    let r = api.put("/v1/relay", json!({"domains": [{"domain": "Example.COM", "next_hop": "[192.0.2.1]:25"}], "networks": ["10.0.0.1/8"]})).await;
    assert_eq!(
        (r.status, r.pointers()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["/networks/0".to_string()]
        )
    );
    let r = api.put("/v1/relay", json!({"domains": [{"domain": "Example.COM", "next_hop": "MX.example.com:25"}], "networks": ["10.0.0.0/8"]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["domains"][0],
        json!({"domain": "example.com", "next_hop": "mx.example.com:25"})
    );

    let r = api
        .put(
            "/v1/trust",
            json!({"ca_pems": ["-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"]}),
        )
        .await;
    assert_eq!(
        (r.status, r.pointers()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["/ca_pems/0".to_string()]
        )
    );
    let r = api
        .put("/v1/trust", json!({"ca_pems": ["not a pem"]}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn evaluate_answers_per_product_section_6() {
    let api = Api::new().await;
    api.post(RULES, json!({"match": "10.0.0.0/8", "level": "encrypt"}))
        .await;
    let bank = api
        .post(
            RULES,
            json!({"match": ".bank.example", "level": "encrypt", "cipher_strength": "high"}),
        )
        .await;
    let r = api.post("/v1/policy/evaluate", json!({"direction": "inbound", "client_ip": "::ffff:10.2.3.4", "sender": "<x@mail.bank.example>"})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["level"], "encrypt");
    assert_eq!(r.body["cipher_strength"], "high");
    assert_eq!(r.body["starttls_offered"], true);
    assert_eq!(r.body["request_client_cert"], false);
    assert_eq!(r.body["level_rule"]["match"], "10.0.0.0/8");
    assert_eq!(r.body["strength_rule"]["id"], bank.body["id"]);
    assert_eq!(r.body["connect"]["level_rule"]["match"], "10.0.0.0/8");
    assert_eq!(r.body["warnings"], json!([]));
    let r = api
        .post(
            "/v1/policy/evaluate",
            json!({"direction": "outbound", "recipient": "a@b.example"}),
        )
        .await;
    assert_eq!(
        r.body["level_rule"],
        json!({"kind": "default", "id": null, "match": null})
    );
    assert_eq!(r.body["strength_rule"], Value::Null);
    let r = api
        .post(
            "/v1/policy/evaluate",
            json!({"direction": "inbound", "client_ip": "10.0.0.300"}),
        )
        .await;
    assert_eq!(
        (r.status, r.pointers()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["/client_ip".to_string()]
        )
    );
    let r = api
        .post("/v1/policy/evaluate", json!({"direction": "sideways"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn health_metrics_docs_and_unknown_paths() {
    let api = Api::new().await;
    assert_eq!(
        api.call("GET", "/healthz", None, None, &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.call("GET", "/readyz", None, None, &[]).await.status,
        StatusCode::OK
    );
    api.post(RULES, json!({"match": "a.example", "level": "may"}))
        .await;
    let m = api.call("GET", "/metrics", None, None, &[]).await;
    let text = m.body.as_str().unwrap();
    assert!(
        text.contains("postern_control_policy_rules{direction=\"inbound\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("postern_control_policy_writes_total 1"),
        "{text}"
    );
    // Timed by route template, so that ids never make new series.
    let created = "postern_control_http_request_seconds_count{route=\"/v1/policy/inbound/rules\",method=\"POST\",status=\"2xx\"} 1";
    assert!(text.contains(created), "{text}");
    let docs = api.call("GET", "/docs/", None, None, &[]).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.body.as_str().unwrap().contains("swagger"));
    let spec = api.call("GET", "/openapi.json", None, None, &[]).await;
    assert_eq!(spec.body["openapi"], "3.1.0");
    let r = api.get("/v1/nothing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.headers["content-type"], "application/problem+json");
}

#[tokio::test]
async fn verify_rules_need_trusted_cas() {
    let api = Api::new().await;
    let ca = include_str!("data/test-ca.pem");
    let r = api
        .put("/v1/policy/inbound/default", json!({"level": "verify"}))
        .await;
    assert_eq!(
        (r.status, r.pointers()),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["/level".to_string()])
    );
    let r = api
        .put("/v1/trust", json!({"ca_pems": [ca, ca.to_string() + ca]}))
        .await;
    assert_eq!(
        (r.status, r.pointers()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["/ca_pems/1".to_string()]
        )
    );
    assert_eq!(
        api.put("/v1/trust", json!({"ca_pems": [ca]})).await.status,
        StatusCode::OK
    );
    let rule = api
        .post(RULES, json!({"match": ".bank.example", "level": "verify"}))
        .await;
    assert_eq!(rule.status, StatusCode::CREATED);
    // Trust cannot be emptied while an enabled verify rule stands...
    let r = api.put("/v1/trust", json!({"ca_pems": []})).await;
    assert_eq!(
        (r.status, r.pointers()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["/ca_pems".to_string()]
        )
    );
    // ...but can once it is disabled.
    let path = format!("{RULES}/{}", rule.body["id"].as_str().unwrap());
    let r = api
        .put(
            &path,
            json!({"match": ".bank.example", "level": "verify", "enabled": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.put("/v1/trust", json!({"ca_pems": []})).await.status,
        StatusCode::OK
    );
    // A sender-domain verify rule makes every session ask for a client certificate.
    assert_eq!(
        api.put("/v1/trust", json!({"ca_pems": [ca]})).await.status,
        StatusCode::OK
    );
    api.put(&path, json!({"match": ".bank.example", "level": "verify"}))
        .await;
    let e = api
        .post(
            "/v1/policy/evaluate",
            json!({"direction": "inbound", "client_ip": "192.0.2.1"}),
        )
        .await;
    assert_eq!(e.body["request_client_cert"], true);
}

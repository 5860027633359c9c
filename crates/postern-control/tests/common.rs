//! A control plane on a real sled store in a temporary directory, driven through its router
//! without a socket (axum's `oneshot`).

#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use postern_control::Control;
use postern_control::store::SledStore;
use serde_json::Value;
use tower::ServiceExt;

pub struct Api {
    pub control: Arc<Control>,
    pub router: Router,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn etag(&self) -> String {
        self.headers["etag"].to_str().unwrap().to_string()
    }

    /// The pointers of a problem's field errors.
    pub fn pointers(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["pointer"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Api {
    pub async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        Api::open(dir).await
    }

    pub async fn open(dir: tempfile::TempDir) -> Api {
        let store = SledStore::open(&dir.path().join("db")).unwrap();
        let tracking =
            postern_control::tracking::Tracking::open(&dir.path().join("tracking.sqlite")).unwrap();
        let control = Control::open(Arc::new(store), Arc::new(tracking)).unwrap();
        let token_file = dir.path().join("admin-token");
        control.bootstrap_admin_token(&token_file).await.unwrap();
        let admin = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_string();
        Api {
            router: postern_control::api::router(control.clone()),
            control,
            admin,
            dir,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, Some(&self.admin), None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(
            "POST",
            path,
            Some(&self.admin),
            Some(&body.to_string()),
            &[],
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(&self.admin), Some(&body.to_string()), &[])
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, Some(&self.admin), None, &[])
            .await
    }
}

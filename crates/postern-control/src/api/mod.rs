//! The REST API (docs/src/interfaces.md): routes, the OpenAPI document and the offline docs page.

mod admin;
mod config;
mod console;
mod error;
mod evaluate;
mod extract;
mod health;
mod policy;
pub mod public;
mod published;
mod queue;
mod reports;
mod rules;
mod tracking;
mod tracking_view;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ApiError, Problem, ProblemField};

use crate::control::Control;

/// Replace-all bodies with 100,000 rules run to about 10 MB.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Pagination parameters shared by every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Page size.
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

impl Page {
    fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(default),
            Some(l) if (1..=max).contains(&l) => Ok(l),
            Some(_) => Err(ApiError::bad_request(
                "limit",
                format!("limit must be between 1 and {max}"),
            )),
        }
    }

    fn numeric_cursor(&self) -> Result<Option<u64>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                c.parse()
                    .map_err(|_| ApiError::bad_request("cursor", "not a cursor this list gave"))
            })
            .transpose()
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The error responses every operation can give, as the server gives them (schemathesis checks
/// the document against the server): each a `problem+json`; a 400 for a malformed request (its
/// query, path or JSON body) on every operation that takes any; a 401 for a missing or unknown
/// token on every operation that takes one.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let takes_input = op.request_body.is_some()
                    || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let responses = &mut op.responses.responses;
                if takes_input {
                    responses.entry("400".into()).or_insert_with(|| {
                        problem("Malformed request: its query, path or JSON body")
                    });
                }
                if secured {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| problem("No bearer token, or one that is not valid"));
                }
                for (code, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if !(code.starts_with('4') || code.starts_with('5')) {
                        continue;
                    }
                    if let Some(content) = response.content.shift_remove("application/json") {
                        response
                            .content
                            .insert("application/problem+json".into(), content);
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Postern control plane", description = "SMTP TLS policy gateway: rules, relay, trust, settings, versions, tokens, workers and their queues, message tracking."),
    modifiers(&BearerAuth, &ProblemResponses),
    paths(
        health::healthz, health::readyz, health::metrics,
        policy::get_policy, policy::list_versions, policy::rollback, evaluate::evaluate,
        rules::inbound::list_rules, rules::inbound::create_rule, rules::inbound::replace_rules,
        rules::inbound::get_rule, rules::inbound::update_rule, rules::inbound::delete_rule,
        rules::inbound::get_default_rule, rules::inbound::set_default_rule,
        rules::outbound::list_rules, rules::outbound::create_rule, rules::outbound::replace_rules,
        rules::outbound::get_rule, rules::outbound::update_rule, rules::outbound::delete_rule,
        rules::outbound::get_default_rule, rules::outbound::set_default_rule,
        config::get_relay, config::put_relay, config::get_trust, config::put_trust,
        config::get_settings, config::put_settings,
        admin::create_token, admin::list_tokens, admin::delete_token, admin::whoami, admin::list_audit,
        admin::list_workers, queue::drain,
        queue::list_queue, queue::retry, queue::flush, queue::delete,
        tracking::list_messages, tracking::get_message, tracking::list_connections,
        reports::list_tls_reports, reports::build_tls_reports,
        reports::list_received_tls_reports,
        published::published_mta_sts,
    ),
    components(schemas(Problem, ProblemField))
)]
pub struct ApiDoc;

/// The OpenAPI document as committed in `openapi/postern.json`.
pub fn openapi_json() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the document serialises");
    json.push('\n');
    json
}

/// Times every request by route template (a path no route matches is `unmatched`).
pub(crate) async fn count_responses(
    State(c): State<Arc<Control>>,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    c.metrics
        .response(route, method.as_str(), status, started.elapsed());
    response
}

pub fn router(control: Arc<Control>) -> Router {
    use rules::{inbound, outbound};
    let api = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/policy", get(policy::get_policy))
        .route("/v1/policy/versions", get(policy::list_versions))
        .route("/v1/policy/rollback", post(policy::rollback))
        .route("/v1/policy/evaluate", post(evaluate::evaluate))
        .route(
            "/v1/policy/inbound/rules",
            get(inbound::list_rules)
                .post(inbound::create_rule)
                .put(inbound::replace_rules),
        )
        .route(
            "/v1/policy/inbound/rules/{id}",
            get(inbound::get_rule)
                .put(inbound::update_rule)
                .delete(inbound::delete_rule),
        )
        .route(
            "/v1/policy/inbound/default",
            get(inbound::get_default_rule).put(inbound::set_default_rule),
        )
        .route(
            "/v1/policy/outbound/rules",
            get(outbound::list_rules)
                .post(outbound::create_rule)
                .put(outbound::replace_rules),
        )
        .route(
            "/v1/policy/outbound/rules/{id}",
            get(outbound::get_rule)
                .put(outbound::update_rule)
                .delete(outbound::delete_rule),
        )
        .route(
            "/v1/policy/outbound/default",
            get(outbound::get_default_rule).put(outbound::set_default_rule),
        )
        .route("/v1/relay", get(config::get_relay).put(config::put_relay))
        .route("/v1/trust", get(config::get_trust).put(config::put_trust))
        .route(
            "/v1/settings",
            get(config::get_settings).put(config::put_settings),
        )
        .route(
            "/v1/tokens",
            get(admin::list_tokens).post(admin::create_token),
        )
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(admin::delete_token),
        )
        .route("/v1/whoami", get(admin::whoami))
        .route("/v1/audit", get(admin::list_audit))
        .route("/v1/workers", get(admin::list_workers))
        .route("/v1/workers/{id}/drain", post(queue::drain))
        .route("/v1/queue", get(queue::list_queue))
        .route("/v1/queue/flush", post(queue::flush))
        .route("/v1/queue/{id}", axum::routing::delete(queue::delete))
        .route("/v1/queue/{id}/retry", post(queue::retry))
        .route("/v1/messages", get(tracking::list_messages))
        .route("/v1/messages/{id}", get(tracking::get_message))
        .route("/v1/connections", get(tracking::list_connections))
        .route("/v1/reports/tls", get(reports::list_tls_reports))
        .route("/v1/reports/tls/build", post(reports::build_tls_reports))
        .route(
            "/v1/reports/tls/received",
            get(reports::list_received_tls_reports),
        )
        .route("/v1/published/mta-sts", get(published::published_mta_sts))
        .fallback(|| async { ApiError::not_found("no such resource") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            control.clone(),
            count_responses,
        ))
        .with_state(control);
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .merge(console::router())
}

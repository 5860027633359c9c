//! The public listener (`--public-listen`): the protocol endpoints anyone on the Internet may
//! reach, and nothing else. `GET /.well-known/mta-sts.txt` (RFC 8461 3.3) for senders that fetch
//! the operator's policy, `POST /tlsrpt` (RFC 8460 5.2) for reporters. It has its own listener,
//! connection budget and limits (`LIMITS`), so that a flood of it never delays the admin API,
//! the console or the probes, and no token or operator data is reachable through it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{ApiError, count_responses, published, reports};
use crate::control::Control;

/// The public listener's limits (postern_http): fewer connections than the admin listener's,
/// eight per source (a reporter or an MTA-STS fetcher needs one), short timers, a connection
/// closed after a minute whatever it does, and eight HTTP/2 streams per connection.
pub const LIMITS: postern_http::Limits = postern_http::Limits {
    max_connections: 512,
    per_source: 8,
    first_byte: Duration::from_secs(10),
    header_read: Duration::from_secs(10),
    idle: Duration::from_secs(10),
    lifetime: Some(Duration::from_secs(60)),
    h2_streams: 8,
};

/// A whole request, headers and body, must be taken and answered within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// Reports one source may POST: a burst of `BURST`, then one per `REFILL`. A reporter sends
/// one report per domain a day (RFC 8460 4.1), so this is generous for honest ones.
pub const BURST: f64 = 10.0;
pub const REFILL: Duration = Duration::from_secs(6);

/// Sources remembered at most. When full, those whose bucket is full again are forgotten, at
/// most once a second (a scan of them all); a new source finding it still full waits, so a
/// flood from many addresses costs neither unbounded memory nor a scan per request.
const SOURCES: usize = 100_000;

/// Per-source token buckets for `POST /tlsrpt`.
#[derive(Default)]
pub struct RateLimit {
    buckets: Mutex<Buckets>,
}

#[derive(Default)]
struct Buckets {
    by_source: HashMap<IpAddr, (f64, Instant)>,
    pruned: Option<Instant>,
}

impl RateLimit {
    /// Takes one token for `ip`; `Err(wait)` when it has none.
    fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let per_s = 1.0 / REFILL.as_secs_f64();
        let key = postern_http::source_key(ip);
        let mut guard = self.buckets.lock().expect("rate lock");
        let Buckets { by_source, pruned } = &mut *guard;
        if by_source.len() >= SOURCES && !by_source.contains_key(&key) {
            if pruned.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
                by_source.retain(|_, (tokens, at)| {
                    *tokens + now.duration_since(*at).as_secs_f64() * per_s < BURST
                });
                *pruned = Some(now);
            }
            if by_source.len() >= SOURCES {
                return Err(Duration::from_secs(1));
            }
        }
        let (tokens, at) = by_source.entry(key).or_insert((BURST, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_s).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_s))
        }
    }
}

async fn rate_limited(
    State(limit): State<Arc<RateLimit>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    match limit.take(peer.ip(), Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let mut response =
                ApiError::too_many_requests("too many reports from this address; try again later")
                    .into_response();
            let seconds = wait.as_secs().max(1).to_string();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&seconds).expect("digits"),
            );
            response
        }
    }
}

/// The deadline of a whole request: a client that sends its body slowly is cut off here, not
/// only when it falls silent.
async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(req)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            "request not completed in time\n",
        )
            .into_response(),
    }
}

pub fn router(control: Arc<Control>) -> Router {
    let limit = Arc::new(RateLimit::default());
    Router::new()
        .route("/.well-known/mta-sts.txt", get(published::mta_sts_policy))
        .route(
            "/tlsrpt",
            post(reports::receive_tls_report)
                .layer(DefaultBodyLimit::max(reports::MAX_POSTED_BYTES))
                .layer(middleware::from_fn_with_state(limit, rate_limited)),
        )
        .fallback(|| async { ApiError::not_found("no such resource") })
        .layer(middleware::from_fn(deadline))
        .layer(middleware::from_fn_with_state(
            control.clone(),
            count_responses,
        ))
        .with_state(control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_one_per_refill() {
        let limit = RateLimit::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..BURST as usize {
            assert!(limit.take(ip, t0).is_ok());
        }
        let wait = limit.take(ip, t0).unwrap_err();
        assert!(wait <= REFILL && wait > Duration::ZERO, "{wait:?}");
        assert!(
            limit.take(other, t0).is_ok(),
            "another source has its own bucket"
        );
        assert!(
            limit.take(ip, t0 + REFILL).is_ok(),
            "one more after a refill"
        );
        assert!(limit.take(ip, t0 + REFILL).is_err());
    }

    #[test]
    fn a_flood_of_sources_is_bounded() {
        let limit = RateLimit::default();
        let t0 = Instant::now();
        for i in 0..SOURCES as u32 {
            assert!(limit.take(IpAddr::from(i.to_be_bytes()), t0).is_ok());
        }
        let known: IpAddr = [0, 0, 0, 1].into();
        let new: IpAddr = [250, 0, 0, 1].into();
        assert!(limit.take(known, t0).is_ok(), "a known source is served");
        assert!(
            limit.take(new, t0).is_err(),
            "full of live buckets: a new source waits"
        );
        assert_eq!(limit.buckets.lock().unwrap().by_source.len(), SOURCES);
        // A minute later every bucket is full again: they are forgotten, the new one served.
        let later = t0 + REFILL * BURST as u32;
        assert!(limit.take(new, later).is_ok());
        assert_eq!(limit.buckets.lock().unwrap().by_source.len(), 1);
    }
}

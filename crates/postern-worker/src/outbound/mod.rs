//! Outbound delivery (issue 5). So far: the TLS decisions of PRODUCT.md 2.3 as pure functions;
//! the delivery queue, next-hop resolution, retries and bounces are to come.

pub mod deliver;
pub mod route;
pub mod tls_steps;

//! Outbound delivery (PRODUCT.md 2.3, 2.4): next-hop resolution, delivery attempts under the
//! outbound levels, the queue with retries and bounces.

pub mod deliver;
pub mod dsn;
pub mod manage;
pub mod queue;
pub mod route;
pub mod tls_steps;

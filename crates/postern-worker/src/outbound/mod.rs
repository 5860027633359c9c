//! Outbound delivery (docs/src/policy.md#outbound, policy.md#queue-retries-and-bounces): next-hop
//! resolution, delivery attempts under the
//! outbound levels with a deadline on every step, connection reuse, the queue with its
//! schedule, per-message state, delivery rounds, retries and bounces.

pub mod bounce;
mod connection;
mod connector;
pub mod deliver;
mod destinations;
pub(crate) mod dns;
mod drive;
pub mod dsn;
mod group;
pub mod intake;
pub mod maillog;
pub mod manage;
mod measure;
pub mod own;
pub mod pool;
pub mod queue;
mod record;
pub mod report;
pub mod round;
pub mod route;
pub mod schedule;
mod scheduler;
pub mod state;
pub mod submit;

//! The worker's DNS handle: one resolver (`Router`) for the current nameservers, MX port and
//! fetch networks, made again when the settings change. The connector resolves next hops with
//! it, the MTA-STS resolver and the TLS-RPT sender their TXT records and HTTPS hosts.

use std::sync::{Arc, Mutex};

use postern_policy::CompiledPolicy;

use super::route::{RouteError, Router};

type Key = (Vec<String>, u16, Vec<ipnet::IpNet>);

#[derive(Default)]
pub struct Dns {
    current: Mutex<Option<(Key, Arc<Router>)>>,
}

impl Dns {
    /// The resolver for `policy`'s delivery settings.
    pub fn router(&self, policy: &CompiledPolicy) -> Result<Arc<Router>, RouteError> {
        let d = &policy.settings.delivery;
        let key = (d.nameservers.clone(), d.mx_port, d.fetch_networks());
        let mut current = self.current.lock().expect("dns lock");
        if let Some((k, r)) = current.as_ref()
            && *k == key
        {
            return Ok(r.clone());
        }
        let router = Arc::new(Router::new(&key.0, key.1)?.with_fetch_networks(key.2.clone()));
        *current = Some((key, router.clone()));
        Ok(router)
    }
}

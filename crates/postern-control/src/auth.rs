//! API tokens and who acts (the REST layer reads them from `Authorization: Bearer <token>`,
//! `api/extract.rs`). Only a SHA-256 of each secret is stored; the
//! secrets carry 256 random bits, so a fast hash is enough (there is nothing to brute-force).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ControlError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and writes everything.
    Admin,
    /// Reads everything but tokens; writes nothing.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// Who is making a request (or a change, for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token id; `postern` for changes the server makes itself.
    pub id: String,
    pub role: Role,
}

impl Actor {
    pub fn system() -> Self {
        Actor {
            id: "postern".into(),
            role: Role::Admin,
        }
    }

    /// Refuses a viewer.
    pub fn require_admin(&self) -> Result<(), ControlError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Viewer => Err(ControlError::Forbidden),
        }
    }
}

/// A new token secret: a recognisable prefix and 256 random bits in hex.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    format!("pst_{}", hex::encode(bytes))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

//! Authentication: who may talk to a node (docs/SECURITY.md has the threat model).
//!
//! - [`secret`]: the shared cluster secret, read from its own file (never from the
//!   config text, never logged).
//! - [`peer_auth`]: the challenge-response of the peer handshake, proving knowledge of
//!   the secret without sending it.
//! - [`users`]: the users of the client ports, their password hashes and permissions.
//!
//! Invariant: nothing in this module logs, formats or returns secret material; the
//! types holding it print as `<redacted>`.

pub mod peer_auth;
pub mod secret;
pub mod users;

pub use secret::{ClusterSecret, SecretError};
pub use users::{Permission, Permissions, Users};

use std::sync::Arc;

use crate::config::SecurityConfig;

/// The credentials a node checks, loaded from the files `[security]` names.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The cluster secret peers must prove; `None` (insecure): peers are not
    /// authenticated.
    pub cluster_secret: Option<ClusterSecret>,
    /// The users of the client ports; `None` (insecure): every client may do
    /// everything, as before.
    pub users: Option<Arc<Users>>,
}

impl Security {
    /// Reads the files `config` names.
    ///
    /// # Errors
    /// A file cannot be read or is invalid; the error names the key and the file.
    pub fn load(config: &SecurityConfig) -> Result<Security, SecretError> {
        let cluster_secret = match &config.cluster_secret_file {
            Some(path) => Some(ClusterSecret::load(path, "security.cluster_secret_file")?),
            None => None,
        };
        let users = match &config.users_file {
            Some(path) => Some(Arc::new(Users::load(path, "security.users_file")?)),
            None => None,
        };
        Ok(Security {
            cluster_secret,
            users,
        })
    }
}

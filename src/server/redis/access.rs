//! Who a Redis connection is and what it may run: AUTH, HELLO's AUTH and the checks
//! before every command, worded as redis-server 7.0 words them.
//!
//! Without a users file ([`Access::open`]) everyone may run everything and AUTH
//! answers as redis-server with no password. With one, a connection starts as the
//! `default` user if it has `nopass`, else unauthenticated: then only the commands
//! Redis flags `no_auth` (AUTH, HELLO, RESET) and QUIT run, the others get `-NOAUTH
//! Authentication required.`; unknown commands and wrong arities get their usual
//! errors first, as in Redis. An authenticated connection runs a command only with the
//! permission it needs ([`required`]), else `-NOPERM this user has no permissions to
//! run the 'NAME' command`.
//!
//! Invariants: a failed AUTH leaves the connection as it was (authenticated or not);
//! every failed AUTH and every refused command is counted ([`Access::take_failures`])
//! and logged with the client's address; passwords are never logged.

use std::sync::Arc;

use log::warn;

use super::command::{Bytes, flags_of};
use crate::codec::resp::RespValue;
use crate::security::{Permission, Permissions, Users, users::DEFAULT_USER};

/// Refusal text of a command before authentication.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// Refusal text of a wrong user or password.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// Refusal text of HELLO without AUTH before authentication (redis-server 7.0's words).
pub const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already \
    authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to \
    authenticate the client and select the RESP protocol version at the same time";

/// A connection's authentication state.
#[derive(Debug, Clone)]
pub struct Access {
    /// `None`: no users file, everything allowed.
    users: Option<Arc<Users>>,
    /// The permissions of the authenticated user; `None`: not authenticated.
    granted: Option<Permissions>,
    /// Failed AUTHs and refused commands not yet taken.
    failures: u64,
}

impl Default for Access {
    fn default() -> Access {
        Access::open()
    }
}

/// The permission the command `args` needs, from its name, subcommand and flags
/// (`None`: any authenticated user may run it: PING, MULTI, CLIENT SETNAME, ...).
pub fn required(args: &[Bytes], flags: &str) -> Option<Permission> {
    let name = String::from_utf8_lossy(&args[0]).to_lowercase();
    let sub = args
        .get(1)
        .map(|s| String::from_utf8_lossy(s).to_lowercase());
    let has = |flag| flags.split(' ').any(|f| f == flag);
    match name.as_str() {
        "config" => Some(Permission::Admin),
        "client" => matches!(sub.as_deref(), Some("list" | "kill")).then_some(Permission::Admin),
        "publish" => Some(Permission::Write),
        "subscribe" | "psubscribe" | "pubsub" => Some(Permission::Read),
        _ if has("admin") => Some(Permission::Admin),
        _ if has("write") => Some(Permission::Write),
        _ if has("readonly") => Some(Permission::Read),
        _ => None,
    }
}

/// The command's name as NOPERM shows it: `name`, or `name|sub` for a container.
fn shown_name(args: &[Bytes]) -> String {
    let name = String::from_utf8_lossy(&args[0]).to_lowercase();
    match args.get(1) {
        Some(sub) if name == "client" || name == "config" => {
            format!("{name}|{}", String::from_utf8_lossy(sub).to_lowercase())
        }
        _ => name,
    }
}

impl Access {
    /// No users file: everything allowed.
    pub fn open() -> Access {
        Access {
            users: None,
            granted: Some(Permissions::ALL),
            failures: 0,
        }
    }

    /// A new connection checked against `users`.
    pub fn checked(users: Arc<Users>) -> Access {
        Access {
            granted: users.unauthenticated(),
            users: Some(users),
            failures: 0,
        }
    }

    /// Whether the connection may run commands (it authenticated, or needs not).
    pub fn is_authenticated(&self) -> bool {
        self.granted.is_some()
    }

    /// The refusal of `args` (client at `addr`), if it may not run now.
    pub fn gate(&mut self, args: &[Bytes], addr: &str) -> Option<RespValue> {
        self.users.as_ref()?;
        let flags = flags_of(args)?;
        let name = String::from_utf8_lossy(&args[0]).to_lowercase();
        if flags.split(' ').any(|f| f == "no_auth") || name == "quit" {
            return None;
        }
        let Some(granted) = self.granted else {
            self.failures += 1;
            warn!("redis client {addr}: {name} before AUTH refused (NOAUTH)");
            return Some(RespValue::error(NOAUTH));
        };
        let needed = required(args, flags)?;
        if granted.allows(needed) {
            return None;
        }
        let shown = shown_name(args);
        self.failures += 1;
        warn!("redis client {addr}: {shown} refused, the user lacks {needed:?} (NOPERM)");
        Some(RespValue::error(format!(
            "NOPERM this user has no permissions to run the '{shown}' command"
        )))
    }

    /// `AUTH [user] password` (or HELLO's AUTH) from the client at `addr`: `None` when
    /// it authenticated, else the refusal (the state is unchanged).
    pub fn authenticate(
        &mut self,
        user: Option<&[u8]>,
        password: &[u8],
        addr: &str,
    ) -> Option<RespValue> {
        let Some(users) = &self.users else {
            return super::command::auth_refusal(user);
        };
        let name = String::from_utf8_lossy(user.unwrap_or(DEFAULT_USER.as_bytes())).into_owned();
        match users.authenticate(&name, password) {
            Some(permissions) => {
                self.granted = Some(permissions);
                None
            }
            None => {
                self.failures += 1;
                warn!("redis client {addr}: AUTH as {name:?} failed (WRONGPASS)");
                Some(RespValue::error(WRONGPASS))
            }
        }
    }

    /// RESET: back to the state of a new connection.
    pub fn reset(&mut self) {
        self.granted = match &self.users {
            Some(users) => users.unauthenticated(),
            None => Some(Permissions::ALL),
        };
    }

    /// The failures counted since the last call.
    pub fn take_failures(&mut self) -> u64 {
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::users::password_hash_hex;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    fn checked() -> Access {
        let text = format!(
            "user default on #{} read write admin\nuser reader on #{} read\n",
            password_hash_hex(b"pw"),
            password_hash_hex(b"rpw")
        );
        Access::checked(Arc::new(Users::parse(&text).unwrap()))
    }

    fn error_text(value: Option<RespValue>) -> Option<String> {
        match value {
            Some(RespValue::Error(text)) => Some(text),
            other => other.map(|v| format!("{v:?}")),
        }
    }

    /// Goal: the order of Redis's checks — unknown/arity, then NOAUTH, then NOPERM.
    #[test]
    fn commands_before_and_after_auth() {
        let mut access = checked();
        let before = [
            ("GET k", Some(NOAUTH)),
            ("PING", Some(NOAUTH)),
            ("FOO", None),
            ("GET", None),
            ("AUTH x", None),
            ("HELLO 3", None),
            ("QUIT", None),
            ("RESET", None),
        ];
        for (i, (line, want)) in before.into_iter().enumerate() {
            let got = error_text(access.gate(&args(line), "a"));
            assert_eq!(got.as_deref(), want, "#{i}: {line}");
        }
        assert_eq!(access.take_failures(), 2);
        let wrong = error_text(access.authenticate(Some(b"reader"), b"x", "a"));
        assert_eq!(wrong.as_deref(), Some(WRONGPASS));
        assert!(!access.is_authenticated());
        assert_eq!(access.authenticate(Some(b"reader"), b"rpw", "a"), None);
        let after = [
            ("GET k", None),
            ("PING", None),
            ("CLIENT SETNAME x", None),
            (
                "SET k v",
                Some("NOPERM this user has no permissions to run the 'set' command"),
            ),
            (
                "CONFIG GET timeout",
                Some("NOPERM this user has no permissions to run the 'config|get' command"),
            ),
            (
                "CLIENT LIST",
                Some("NOPERM this user has no permissions to run the 'client|list' command"),
            ),
            (
                "PUBLISH c m",
                Some("NOPERM this user has no permissions to run the 'publish' command"),
            ),
            ("SUBSCRIBE c", None),
        ];
        for (i, (line, want)) in after.into_iter().enumerate() {
            let got = error_text(access.gate(&args(line), "a"));
            assert_eq!(got.as_deref(), want, "#{i}: {line}");
        }
        // A failed AUTH keeps the current user.
        assert!(access.authenticate(None, b"bad", "a").is_some());
        assert!(access.is_authenticated());
        assert_eq!(access.authenticate(None, b"pw", "a"), None);
        assert_eq!(access.gate(&args("SET k v"), "a"), None);
        access.reset();
        assert!(!access.is_authenticated());
    }

    #[test]
    fn without_users_everything_is_allowed() {
        let mut access = Access::open();
        for line in ["GET k", "SET k v", "CONFIG GET x", "CLIENT KILL 1"] {
            assert_eq!(access.gate(&args(line), "a"), None, "{line}");
        }
        assert_eq!(access.authenticate(Some(b"default"), b"x", "a"), None);
    }
}

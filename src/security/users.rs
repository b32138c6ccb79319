//! The users file (`security.users_file`): who may use the client ports, with what
//! password and which permissions. Shared by the Redis, native and HTTP ports.
//!
//! Format, one user a line, in the spirit of a Redis ACL file (a line starting with `#`
//! is a comment):
//!
//! ```text
//! user default on #<sha256 hex of the password> read
//! user alice on #<sha256 hex> #<another, during a rotation> read write
//! user ops on #<sha256 hex> read write admin
//! user old off #<sha256 hex> read
//! ```
//!
//! `on`/`off` enables or disables the user (default `on`); `#HEX` is the SHA-256 of an
//! accepted password (as Redis ACL's `#<hash>`; `echo -n PASSWORD | sha256sum`);
//! `nopass` accepts any password (for `default`, connections start authenticated as
//! it, as in Redis); `read`, `write`, `admin` are the permissions, independent of each
//! other. The `default` user is the one `AUTH password` (one argument) names.
//!
//! Invariants: passwords are never stored, only their SHA-256; a password is compared
//! to every hash of the user in constant time; `Debug` shows no hash; an error names the
//! line, never its content.

use std::fmt;
use std::path::Path;

use ring::digest::{SHA256, digest};

use super::secret::{SecretError, read_private};

/// The user `AUTH password` authenticates as.
pub const DEFAULT_USER: &str = "default";

/// What a user may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Read keys (GET, SCAN, SUBSCRIBE, ...).
    pub read: bool,
    /// Write keys (SET, DEL, PUBLISH, ...).
    pub write: bool,
    /// Administer the node and the cluster (CONFIG, CLIENT LIST/KILL, membership,
    /// leadership, snapshot saves).
    pub admin: bool,
}

/// One permission a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See [`Permissions::read`].
    Read,
    /// See [`Permissions::write`].
    Write,
    /// See [`Permissions::admin`].
    Admin,
}

impl Permissions {
    /// Every permission (what everyone has without a users file).
    pub const ALL: Permissions = Permissions {
        read: true,
        write: true,
        admin: true,
    };

    /// Whether `permission` is granted.
    pub fn allows(self, permission: Permission) -> bool {
        match permission {
            Permission::Read => self.read,
            Permission::Write => self.write,
            Permission::Admin => self.admin,
        }
    }
}

struct User {
    name: String,
    enabled: bool,
    nopass: bool,
    hashes: Vec<[u8; 32]>,
    permissions: Permissions,
}

/// The users of the client ports.
pub struct Users {
    users: Vec<User>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.users.iter().map(|u| u.name.as_str()).collect();
        write!(f, "Users({names:?}, hashes redacted)")
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Users {
    /// Reads the users file at `path` (the value of `key`).
    ///
    /// # Errors
    /// The file cannot be read or a line is invalid (named by number).
    pub fn load(path: &Path, key: &'static str) -> Result<Users, SecretError> {
        let bytes = read_private(path, key)?;
        let invalid = |message| SecretError::Invalid {
            key,
            path: path.to_path_buf(),
            message,
        };
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8".into()))?;
        Users::parse(&text).map_err(invalid)
    }

    /// Parses the text of a users file.
    ///
    /// # Errors
    /// The first invalid line, by number (its content is not repeated: it holds hashes).
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut users: Vec<User> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            if words.next() != Some("user") {
                return Err(format!("line {line_no}: must start with `user`"));
            }
            let Some(name) = words.next().filter(|n| !n.starts_with('#')) else {
                return Err(format!("line {line_no}: a user name must follow `user`"));
            };
            if users.iter().any(|u| u.name == name) {
                return Err(format!("line {line_no}: user {name:?} is listed twice"));
            }
            let mut user = User {
                name: name.to_string(),
                enabled: true,
                nopass: false,
                hashes: Vec::new(),
                permissions: Permissions::default(),
            };
            for word in words {
                match word {
                    "on" => user.enabled = true,
                    "off" => user.enabled = false,
                    "nopass" => user.nopass = true,
                    "read" => user.permissions.read = true,
                    "write" => user.permissions.write = true,
                    "admin" => user.permissions.admin = true,
                    hash if hash.starts_with('#') => match parse_hash(&hash[1..]) {
                        Some(hash) => user.hashes.push(hash),
                        None => {
                            return Err(format!(
                                "line {line_no}: a password hash is `#` and 64 hex digits \
                                 (the SHA-256 of the password)"
                            ));
                        }
                    },
                    _ => {
                        return Err(format!(
                            "line {line_no}: unknown word (expected on, off, nopass, #<sha256>, \
                             read, write or admin)"
                        ));
                    }
                }
            }
            if user.hashes.is_empty() && !user.nopass {
                return Err(format!(
                    "line {line_no}: user {name:?} has no password hash and no `nopass`"
                ));
            }
            users.push(user);
        }
        Ok(Users { users })
    }

    /// The permissions of `user` if `password` is one of its passwords and it is
    /// enabled; `None` otherwise (a wrong password, an unknown or disabled user: the
    /// caller cannot tell which, as with Redis's WRONGPASS).
    pub fn authenticate(&self, user: &str, password: &[u8]) -> Option<Permissions> {
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest(&SHA256, password).as_ref());
        let found = self.users.iter().find(|u| u.name == user)?;
        let mut matched = found.nopass;
        for hash in &found.hashes {
            matched |= constant_time_eq(hash, &sha256);
        }
        (matched && found.enabled).then_some(found.permissions)
    }

    /// The permissions a new connection has before any AUTH: the `default` user's if it
    /// is enabled with `nopass`, else none (the connection must authenticate).
    pub fn unauthenticated(&self) -> Option<Permissions> {
        self.users
            .iter()
            .find(|u| u.name == DEFAULT_USER && u.enabled && u.nopass)
            .map(|u| u.permissions)
    }
}

/// The SHA-256 of `password` in lower-case hex, as the users file wants it.
pub fn password_hash_hex(password: &[u8]) -> String {
    digest(&SHA256, password)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        let text = format!(
            "# users\n\
             user default on #{} read\n\
             user alice #{} #{} read write\n\
             user ops on #{} admin\n\
             user old off #{} read write admin\n",
            password_hash_hex(b"pw"),
            password_hash_hex(b"alice1"),
            password_hash_hex(b"alice2"),
            password_hash_hex(b"ops"),
            password_hash_hex(b"old"),
        );
        Users::parse(&text).unwrap()
    }

    #[test]
    fn authenticate_checks_every_hash_and_the_enabled_flag() {
        let users = users();
        let read = Permissions {
            read: true,
            ..Permissions::default()
        };
        let cases: [(&str, &[u8], Option<Permissions>); 8] = [
            ("default", b"pw", Some(read)),
            ("default", b"PW", None),
            (
                "alice",
                b"alice1",
                Some(Permissions {
                    write: true,
                    ..read
                }),
            ),
            (
                "alice",
                b"alice2",
                Some(Permissions {
                    write: true,
                    ..read
                }),
            ),
            ("alice", b"pw", None),
            (
                "ops",
                b"ops",
                Some(Permissions {
                    admin: true,
                    ..Permissions::default()
                }),
            ),
            ("old", b"old", None),
            ("nobody", b"pw", None),
        ];
        for (i, (user, password, want)) in cases.into_iter().enumerate() {
            assert_eq!(users.authenticate(user, password), want, "#{i}: {user}");
        }
        assert_eq!(users.unauthenticated(), None);
    }

    #[test]
    fn nopass_default_lets_connections_start_authenticated() {
        let users = Users::parse("user default on nopass read\n").unwrap();
        assert_eq!(users.unauthenticated().map(|p| p.read), Some(true));
        assert!(users.authenticate("default", b"anything").is_some());
    }

    #[test]
    fn bad_lines_are_named_by_number_without_their_content() {
        let cases = [
            ("usr a #00", "line 1: must start with `user`"),
            ("user a read", "line 1: user \"a\" has no password hash"),
            ("\nuser a #abc read", "line 2: a password hash is"),
            ("user a nopass sudo", "line 1: unknown word"),
            (
                "user a nopass\nuser a nopass",
                "line 2: user \"a\" is listed twice",
            ),
        ];
        for (i, (text, want)) in cases.into_iter().enumerate() {
            let got = Users::parse(text).map(|_| ()).unwrap_err();
            assert!(got.starts_with(want), "#{i}: {got}");
        }
    }

    #[test]
    fn debug_shows_no_hash() {
        let shown = format!("{:?}", users());
        assert!(!shown.contains(&password_hash_hex(b"pw")), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }
}

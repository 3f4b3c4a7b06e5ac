//! `[server]`: where the broker listens, and who may reach it.

use super::source::{FieldPath, Report};
use super::problem::ProblemCode;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `[server]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address; default `127.0.0.1:7878`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Browser origins allowed to call the MCP endpoint (`Origin` header, exact match such as
    /// `https://app.example`). Empty: requests carrying an `Origin` are refused (T19).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// `Host` header values accepted by the MCP endpoint, besides loopback names and the listen
    /// address (T19: DNS rebinding of localhost).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// The Unix domain socket agents' thin clients (`airlock mcp`, `airlock call`) connect to.
    /// Default: [`default_socket_path`]. `"off"` serves no socket. Relative to the config.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The group that owns the socket (mode [`ServerConfig::socket_mode`]), so that only the
    /// agents' users can connect. Default: the broker's own group.
    #[serde(default)]
    pub socket_group: Option<String>,
    /// The socket's permission bits, `0o660` by default; never more than `0o770` (the socket is
    /// never open to others).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: u32,
    /// The OS users agents run as. `airlock doctor` checks that the broker is none of them.
    #[serde(default)]
    pub agent_users: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            socket: None,
            socket_group: None,
            socket_mode: default_socket_mode(),
            agent_users: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// The socket to serve, or `None` when `socket = "off"`.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.socket {
            Some(p) if p.as_os_str() == "off" => None,
            Some(p) => Some(p.clone()),
            None => Some(default_socket_path()),
        }
    }

    /// Checks the socket's mode and makes its path absolute.
    pub(super) fn checked(mut self, r: &mut Report<'_, '_>, at: &FieldPath, base: &Path) -> ServerConfig {
        if self.socket_mode & !0o770 != 0 || self.socket_mode & 0o600 != 0o600 {
            r.problem(
                &at.join("socket_mode"),
                ProblemCode::UnsafePermissions,
                format!("{:#o}: the owner needs read and write, and others may have nothing (at most 0o770)", self.socket_mode),
            );
        }
        self.socket = self.socket.map(|p| if p.as_os_str() == "off" { p } else { base.join(p) });
        self
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7878))
}

fn default_socket_mode() -> u32 {
    0o660
}

/// Where the broker's socket is when nothing says otherwise, and so where thin clients look
/// first: `$XDG_RUNTIME_DIR/airlock/airlock.sock` when that is set, else
/// `/run/airlock/airlock.sock` (systemd's `RuntimeDirectory=airlock`). A runtime directory, never
/// the data directory, so that agents' users never need a path into the broker's files.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("airlock").join("airlock.sock"),
        None => PathBuf::from("/run/airlock/airlock.sock"),
    }
}

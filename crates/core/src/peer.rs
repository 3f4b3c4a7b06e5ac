//! Who is at the other end of a Unix socket, as the kernel says (`SO_PEERCRED`).

use serde::{Deserialize, Serialize};

/// The process that connected to the broker's Unix socket: its user, group and process id at
/// connect time, as the kernel reported them. Recorded in the audit next to the agent, so that
/// a token used from an unexpected OS user stands out. Not a secret, and not an identity on its
/// own: the agent is still whoever holds the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
    /// The peer's process id, where the kernel gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

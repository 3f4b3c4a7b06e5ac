//! Connect-time address screening (T07): the classifier of non-public addresses and the
//! `reqwest` resolver that applies it to every name it resolves.
//!
//! The check runs inside the resolver, so it sees the addresses the connection will actually use:
//! a name that resolves to a public address once and to a private one later (DNS rebinding) is
//! caught on the second connection. IP-literal URLs never reach a resolver; they are admitted only
//! when a destination binds that exact literal (see `validate`).

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a host name was not resolved to a usable address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address of the name is loopback, private, link-local or otherwise not public, and
    /// the handle does not allow private addresses.
    #[error(
        "every address of {host} is non-public and this handle does not allow private addresses"
    )]
    Refused {
        /// The name that was looked up (not secret: it is a bound destination).
        host: String,
    },
    /// The lookup failed or returned nothing.
    #[error("{host} did not resolve: {source}")]
    Lookup {
        /// The name that was looked up.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
}

/// True when `ip` is a globally routable unicast address, false for loopback, private (RFC 1918),
/// link-local (including 169.254.169.254 metadata), CGNAT, ULA, unspecified, broadcast, multicast,
/// reserved, benchmarking and documentation ranges. IPv6 forms that embed an IPv4 address
/// (mapped, compatible, NAT64, 6to4) are judged by the embedded address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => v4_is_public(a),
        IpAddr::V6(a) => v6_is_public(a),
    }
}

fn v4_is_public(a: Ipv4Addr) -> bool {
    let [a0, a1, a2, _] = a.octets();
    let refused = a0 == 0 // "this network", unspecified
        || a0 == 10
        || a0 == 127
        || (a0 == 100 && (a1 & 0xc0) == 64) // CGNAT 100.64/10
        || (a0 == 169 && a1 == 254) // link-local, cloud metadata
        || (a0 == 172 && (a1 & 0xf0) == 16)
        || (a0 == 192 && a1 == 0 && a2 == 0) // IETF protocol assignments
        || (a0 == 192 && a1 == 0 && a2 == 2) // TEST-NET-1
        || (a0 == 192 && a1 == 88 && a2 == 99) // 6to4 relay anycast
        || (a0 == 192 && a1 == 168)
        || (a0 == 198 && (a1 & 0xfe) == 18) // benchmarking 198.18/15
        || (a0 == 198 && a1 == 51 && a2 == 100) // TEST-NET-2
        || (a0 == 203 && a1 == 0 && a2 == 113) // TEST-NET-3
        || a0 >= 224; // multicast, reserved 240/4, broadcast
    !refused
}

fn v6_is_public(a: Ipv6Addr) -> bool {
    let s = a.segments();
    let low_v4 = || Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    // ::ffff:0:0/96 (mapped) and ::/96 (compatible, which also covers :: and ::1).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return v4_is_public(low_v4());
    }
    // NAT64 well-known prefix 64:ff9b::/96 embeds the target v4; 64:ff9b:1::/48 is local use.
    if s[0] == 0x64 && s[1] == 0xff9b {
        return s[2..6] == [0; 4] && v4_is_public(low_v4());
    }
    // Only 2000::/3 is global unicast: this refuses ULA fc00::/7, link-local fe80::/10,
    // site-local, multicast ff00::/8, discard 100::/64 and everything unassigned.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    // 6to4 2002::/16 embeds a v4 address in bits 16..48.
    if s[0] == 0x2002 {
        let [b0, b1] = s[1].to_be_bytes();
        let [b2, b3] = s[2].to_be_bytes();
        return v4_is_public(Ipv4Addr::new(b0, b1, b2, b3));
    }
    // Teredo 2001::/32 hides an obfuscated v4 peer; no API is served from it, so refuse it.
    // Documentation: 2001:db8::/32 and 3fff::/20.
    let refused =
        (s[0] == 0x2001 && (s[1] == 0 || s[1] == 0x0db8)) || (s[0] == 0x3fff && s[1] & 0xf000 == 0);
    !refused
}

/// Keeps the addresses a connection may use; refuses when none is left.
pub(crate) fn screen(
    host: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let kept: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| allow_private || is_public(a.ip()))
        .collect();
    if kept.is_empty() {
        return Err(ResolveError::Refused {
            host: host.to_owned(),
        });
    }
    Ok(kept)
}

/// A `reqwest` resolver that looks names up with the system resolver and drops every
/// non-public address unless the client was built for handles that allow private addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub(crate) allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|source| ResolveError::Lookup {
                    host: host.clone(),
                    source,
                })?;
            let kept = screen(&host, found, allow_private)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_classified_as_such() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "192.168.255.255",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.1.2.3",
            "::ffff:0.0.0.0",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "ff0e::1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1.2.3.4",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2002:a9fe:a9fe::",
            "2001:db8::1",
            "2001::1",
            "3fff::1",
            "100::1",
            "::2:1",
        ] {
            assert!(!is_public(ip(s)), "{s} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "11.0.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
            "2001:4860::8888",
        ] {
            assert!(is_public(ip(s)), "{s} must be allowed");
        }
    }

    fn sa(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), 443)
    }

    #[test]
    fn screen_drops_private_answers_and_refuses_when_none_is_left() {
        // A rebinding answer: the public address is kept, the loopback one is never dialled.
        let kept = screen("h", [sa("127.0.0.1"), sa("1.1.1.1")], false).unwrap();
        assert_eq!(kept, vec![sa("1.1.1.1")]);
        let e = screen("h", [sa("169.254.169.254"), sa("::ffff:127.0.0.1")], false).unwrap_err();
        assert!(matches!(e, ResolveError::Refused { .. }));
        assert!(screen("h", [], true).is_err());
        assert_eq!(
            screen("h", [sa("10.0.0.1")], true).unwrap(),
            vec![sa("10.0.0.1")]
        );
    }

    #[tokio::test]
    async fn t07_resolver_refuses_localhost_unless_private_is_allowed() {
        let name: Name = "localhost".parse().unwrap();
        let err = match (GuardedResolver {
            allow_private: false,
        })
        .resolve(name)
        .await
        {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(err
            .downcast_ref::<ResolveError>()
            .is_some_and(|e| matches!(e, ResolveError::Refused { .. })));
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = (GuardedResolver {
            allow_private: true,
        })
        .resolve(name)
        .await
        .unwrap()
        .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}

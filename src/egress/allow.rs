//! Which hosts a phase may reach through the egress proxy: `host:port` names, nothing else.

/// One allowed destination, as the task file names it (`registry.npmjs.org:443`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostPort {
    /// Lower-case host name or address literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port` or `[v6]:port`; `None` for anything else.
    pub fn parse(s: &str) -> Option<HostPort> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once("]:")?;
            (h, p)
        } else {
            s.rsplit_once(':')?
        };
        let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
        ok.then_some(HostPort { host, port })
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The destinations one phase may reach; empty: none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(pub Vec<HostPort>);

impl AllowList {
    /// Whether `dest` is named exactly (host compared case-insensitively, same port).
    pub fn allows(&self, dest: &HostPort) -> bool {
        self.0.iter().any(|a| a == dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports_must_match_exactly() {
        let allow = AllowList(vec![HostPort::parse("Registry.npmjs.org:443").unwrap()]);
        assert!(allow.allows(&HostPort::parse("registry.npmjs.org:443").unwrap()));
        assert!(allow.allows(&HostPort::parse("registry.npmjs.org.:443").unwrap()));
        assert!(!allow.allows(&HostPort::parse("registry.npmjs.org:80").unwrap()));
        assert!(!allow.allows(&HostPort::parse("evil.npmjs.org:443").unwrap()));
        assert_eq!(
            HostPort::parse("[::1]:8080").map(|h| h.to_string()),
            Some("[::1]:8080".into())
        );
        for bad in ["", "host", "host:0", "host:99999", "a b:1", "h/x:1", ":443"] {
            assert!(HostPort::parse(bad).is_none(), "{bad}");
        }
    }
}

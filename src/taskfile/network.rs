//! `network`: what each phase of a task may reach through fanout's egress proxy under
//! `--net isolated`: `{"agent": "model", "setup": ["registry.npmjs.org:443"], "verify": "none"}`.

use crate::egress::HostPort;

/// One phase's destinations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhaseNet {
    /// Nothing.
    None,
    /// The agent's model API only, through the proxy's model route (Codex agents; `http://`
    /// or `https://` upstreams).
    Model,
    /// These `host:port` names.
    Hosts(Vec<HostPort>),
}

impl PhaseNet {
    /// The names the proxy allows for this phase.
    pub fn hosts(&self) -> Vec<HostPort> {
        match self {
            PhaseNet::Hosts(h) => h.clone(),
            PhaseNet::None | PhaseNet::Model => Vec::new(),
        }
    }
}

/// Every phase's destinations. Defaults: agent = model API only, setup and verify = none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    pub agent: PhaseNet,
    pub setup: PhaseNet,
    pub verify: PhaseNet,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            agent: PhaseNet::Model,
            setup: PhaseNet::None,
            verify: PhaseNet::None,
        }
    }
}

/// The phases `network` names.
pub const PHASES: [&str; 3] = ["agent", "setup", "verify"];

impl NetworkSpec {
    /// Parses the object; `Err` lists `(field, problem)` pairs.
    pub fn parse(value: &serde_json::Value) -> Result<NetworkSpec, Vec<(String, String)>> {
        let Some(obj) = value.as_object() else {
            return Err(vec![(String::new(), "expected an object".into())]);
        };
        let mut spec = NetworkSpec::default();
        let mut problems = Vec::new();
        for (k, v) in obj {
            let phase = match v {
                serde_json::Value::String(s) if s == "none" => PhaseNet::None,
                serde_json::Value::String(s) if s == "model" && k == "agent" => PhaseNet::Model,
                serde_json::Value::Array(items) => {
                    let mut hosts = Vec::new();
                    for (i, it) in items.iter().enumerate() {
                        match it.as_str().and_then(HostPort::parse) {
                            Some(h) => hosts.push(h),
                            None => problems
                                .push((format!("{k}[{i}]"), "expected \"host:port\"".into())),
                        }
                    }
                    PhaseNet::Hosts(hosts)
                }
                _ => {
                    problems.push((
                        k.clone(),
                        "expected \"none\", \"model\" (agent) or a list of \"host:port\"".into(),
                    ));
                    continue;
                }
            };
            match k.as_str() {
                "agent" => spec.agent = phase,
                "setup" => spec.setup = phase,
                "verify" => spec.verify = phase,
                _ => problems.push((
                    k.clone(),
                    format!("unknown phase (expected one of {})", PHASES.join(", ")),
                )),
            }
        }
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn phases_default_and_parse() {
        let s = NetworkSpec::parse(&json!({"setup": ["localhost:8080"]})).unwrap();
        assert_eq!(s.agent, PhaseNet::Model);
        assert_eq!(
            s.setup.hosts(),
            vec![HostPort::parse("localhost:8080").unwrap()]
        );
        assert_eq!(s.verify, PhaseNet::None);
        assert!(NetworkSpec::parse(&json!({"setup": "model"})).is_err());
        assert!(NetworkSpec::parse(&json!({"deploy": "none"})).is_err());
        assert!(NetworkSpec::parse(&json!({"agent": ["nope"]})).is_err());
        assert!(NetworkSpec::parse(&json!("none")).is_err());
    }
}

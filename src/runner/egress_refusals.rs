//! What the egress proxies refused each task of a run: counted per phase and destination, so a
//! process that retries in a loop makes one line of the report (and one event), not thousands.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::egress::{HostPort, Refusal};
use crate::report::{EgressRefusal, TaskReport};

/// Distinct destinations kept per task (a process trying many names makes no endless report);
/// later ones are still refused, and not listed.
const MAX_PER_TASK: usize = 64;

/// Shared by the run's proxies (cheap to clone).
#[derive(Clone, Default)]
pub(crate) struct Refusals(Arc<Mutex<BTreeMap<String, Vec<EgressRefusal>>>>);

impl Refusals {
    /// Counts one refusal; returns it as a report entry when it is the first of its kind (the
    /// caller then emits the event).
    pub(crate) fn record(&self, task: &str, phase: &str, r: &Refusal) -> Option<EgressRefusal> {
        let (host, port) = match HostPort::parse(&r.destination) {
            Some(hp) => (hp.host, hp.port),
            None => (r.destination.clone(), 0),
        };
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list = all.entry(task.to_string()).or_default();
        if let Some(e) = list
            .iter_mut()
            .find(|e| e.phase == phase && e.host == host && e.port == port)
        {
            e.count = e.count.saturating_add(1);
            return None;
        }
        if list.len() >= MAX_PER_TASK {
            return None;
        }
        let entry = EgressRefusal {
            phase: phase.to_string(),
            host,
            port,
            reason: r.reason.clone(),
            count: 1,
        };
        list.push(entry.clone());
        Some(entry)
    }

    /// Puts each task's refusals into its report.
    pub(crate) fn fill_reports(&self, reports: &mut [TaskReport]) {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for t in reports {
            if let Some(list) = all.get(&t.id) {
                t.egress_refused = list.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_once_per_phase_and_destination() {
        let r = Refusals::default();
        let refusal = |d: &str| Refusal {
            destination: d.into(),
            reason: "not allowed".into(),
        };
        assert!(r
            .record("t", "agent", &refusal("example.com:443"))
            .is_some());
        assert!(r
            .record("t", "agent", &refusal("Example.com:443"))
            .is_none());
        assert!(r
            .record("t", "verify", &refusal("example.com:443"))
            .is_some());
        let line = r.record("t", "agent", &refusal("GET http://x/ HTTP/1.1"));
        assert_eq!(line.map(|e| e.port), Some(0));
        let mut reports = vec![TaskReport::new("t", "a"), TaskReport::new("u", "a")];
        r.fill_reports(&mut reports);
        let got = &reports[0].egress_refused;
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            (got[0].count, got[0].destination()),
            (2, "example.com:443".into())
        );
        assert_eq!(
            got[0].line(),
            "network refused: agent → example.com:443 (2 times) — allow it with network.agent"
        );
        assert!(reports[1].egress_refused.is_empty());
    }
}

//! The health of one checker of one real server: rise/fall hysteresis on a clock passed in.
//!
//! Sans-IO: the engine tells it when a probe ended and how; it answers whether the server's
//! state changed and when the next probe is due. keepalived's `retry N` means a server that is
//! up goes down after N + 1 consecutive failures, the retries `delay_before_retry` apart; a
//! server that is down comes back after `rise` consecutive successes, `delay_loop` apart.

use std::time::{Duration, Instant};

/// Timing and hysteresis of one checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Time between probes (keepalived's `delay_loop`).
    pub interval: Duration,
    /// Time between a failed probe of an up server and its retry (`delay_before_retry`).
    pub retry_delay: Duration,
    /// Consecutive failures that take an up server down (`retry` + 1, or `fall`).
    pub fall: u32,
    /// Consecutive successes that bring a down server back (`rise`).
    pub rise: u32,
    /// Start down, and come up only after `rise` successes (keepalived's `alpha`).
    pub alpha: bool,
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered as expected; `weight` is a `misc_dynamic` weight, if the check gave one.
    Up { weight: Option<u32> },
    /// It did not; the reason is logged with the transition.
    Down(String),
}

/// A change of the server's state as this checker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down {
        reason: String,
        failures: u32,
    },
    /// Still up, with a new `misc_dynamic` weight (`None`: back to the configured weight).
    Weight(Option<u32>),
}

/// The rise/fall state machine.
#[derive(Clone, Debug)]
pub struct Health {
    policy: Policy,
    up: bool,
    /// Consecutive failures (while up) or successes (while down).
    streak: u32,
    weight: Option<u32>,
    due: Instant,
    last: Option<Outcome>,
}

impl Health {
    /// A checker whose first probe is due at `now` (keepalived starts checking at once).
    pub fn new(policy: Policy, now: Instant) -> Health {
        Health {
            policy,
            up: !policy.alpha,
            streak: 0,
            weight: None,
            due: now,
            last: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The `misc_dynamic` weight last reported while up.
    pub fn weight(&self) -> Option<u32> {
        self.weight
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// When the next probe should start.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// The last probe's result.
    pub fn last(&self) -> Option<&Outcome> {
        self.last.as_ref()
    }

    /// Records a finished probe at `now` and schedules the next.
    pub fn record(&mut self, now: Instant, outcome: Outcome) -> Option<Transition> {
        let p = self.policy;
        let mut next = p.interval;
        let t = match (&outcome, self.up) {
            (Outcome::Up { weight }, true) => {
                self.streak = 0;
                if *weight != self.weight {
                    self.weight = *weight;
                    Some(Transition::Weight(*weight))
                } else {
                    None
                }
            }
            (Outcome::Up { weight }, false) => {
                self.streak += 1;
                if self.streak >= p.rise {
                    self.up = true;
                    self.streak = 0;
                    self.weight = *weight;
                    Some(Transition::Up)
                } else {
                    None
                }
            }
            (Outcome::Down(reason), true) => {
                self.streak += 1;
                if self.streak >= p.fall {
                    let failures = self.streak;
                    self.up = false;
                    self.streak = 0;
                    Some(Transition::Down {
                        reason: reason.clone(),
                        failures,
                    })
                } else {
                    next = p.retry_delay;
                    None
                }
            }
            (Outcome::Down(_), false) => {
                self.streak = 0;
                None
            }
        };
        self.last = Some(outcome);
        self.due = now + next;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy(fall: u32, rise: u32) -> Policy {
        Policy {
            interval: 6 * S,
            retry_delay: S,
            fall,
            rise,
            alpha: false,
        }
    }

    fn down(r: &str) -> Outcome {
        Outcome::Down(r.into())
    }
    const OK: Outcome = Outcome::Up { weight: None };

    #[test]
    fn falls_after_retries_spaced_by_retry_delay() {
        let t0 = Instant::now();
        let mut h = Health::new(policy(3, 1), t0);
        assert!(h.is_up());
        assert_eq!(h.due(), t0);
        assert_eq!(h.record(t0, down("refused")), None);
        assert_eq!(
            h.due(),
            t0 + S,
            "a failed probe of an up server is retried after delay_before_retry"
        );
        assert_eq!(h.record(t0 + S, down("refused")), None);
        let t = h.record(t0 + 2 * S, down("timeout"));
        assert_eq!(
            t,
            Some(Transition::Down {
                reason: "timeout".into(),
                failures: 3
            })
        );
        assert!(!h.is_up());
        assert_eq!(h.due(), t0 + 8 * S, "a down server is probed every delay_loop");
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let t0 = Instant::now();
        let mut h = Health::new(policy(2, 1), t0);
        assert_eq!(h.record(t0, down("x")), None);
        assert_eq!(h.record(t0 + S, OK), None);
        assert_eq!(h.due(), t0 + 7 * S);
        assert_eq!(h.record(t0 + 7 * S, down("x")), None);
        assert!(h.is_up());
        assert!(matches!(h.record(t0 + 8 * S, down("x")), Some(Transition::Down { .. })));
    }

    #[test]
    fn rises_after_consecutive_successes_and_flapping_never_rises() {
        let t0 = Instant::now();
        let mut h = Health::new(policy(1, 3), t0);
        assert!(matches!(
            h.record(t0, down("x")),
            Some(Transition::Down { failures: 1, .. })
        ));
        // Flapping: up, up, down, up, up, down ... never three in a row.
        let mut t = t0;
        for i in 0..12 {
            t += 6 * S;
            let o = if i % 3 == 2 { down("flap") } else { OK };
            assert_eq!(h.record(t, o), None, "probe {i}");
            assert!(!h.is_up());
        }
        for i in 0..2 {
            t += 6 * S;
            assert_eq!(h.record(t, OK), None, "probe {i}");
        }
        t += 6 * S;
        assert_eq!(h.record(t, OK), Some(Transition::Up));
        assert!(h.is_up());
    }

    #[test]
    fn alpha_starts_down() {
        let t0 = Instant::now();
        let mut h = Health::new(
            Policy {
                alpha: true,
                ..policy(2, 2)
            },
            t0,
        );
        assert!(!h.is_up());
        assert_eq!(h.record(t0, OK), None);
        assert_eq!(h.record(t0 + 6 * S, OK), Some(Transition::Up));
    }

    #[test]
    fn dynamic_weights_are_reported_once_per_change() {
        let t0 = Instant::now();
        let mut h = Health::new(policy(1, 1), t0);
        assert_eq!(
            h.record(t0, Outcome::Up { weight: Some(5) }),
            Some(Transition::Weight(Some(5)))
        );
        assert_eq!(h.record(t0, Outcome::Up { weight: Some(5) }), None);
        assert_eq!(h.weight(), Some(5));
        assert_eq!(
            h.record(t0, OK),
            Some(Transition::Weight(None)),
            "exit 0 restores the configured weight"
        );
        assert_eq!(h.weight(), None);
        assert!(matches!(h.record(t0, down("x")), Some(Transition::Down { .. })));
        assert_eq!(h.record(t0, Outcome::Up { weight: Some(7) }), Some(Transition::Up));
        assert_eq!(h.weight(), Some(7));
    }
}

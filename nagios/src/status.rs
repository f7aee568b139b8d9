//! Plugin states and exit codes, as the Nagios plugin guidelines define them.

use std::fmt;

/// A check result's state; the process exit code is [`State::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The service is fine (exit 0).
    Ok,
    /// Above a warning threshold (exit 1).
    Warning,
    /// Above a critical threshold or not running (exit 2).
    Critical,
    /// Bad arguments or the check could not be made (exit 3).
    Unknown,
}

impl State {
    /// The exit code Nagios reads.
    pub fn code(self) -> i32 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }

    /// Rank for "worst sub-check wins": CRITICAL > WARNING > UNKNOWN > OK
    /// (monitoring-plugins' `max_state_alt`).
    fn severity(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Unknown => 1,
            State::Warning => 2,
            State::Critical => 3,
        }
    }

    /// The worse of two states.
    pub fn worst(self, other: State) -> State {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// Parses a state given as a word (`critical`, any case) or a code (`2`).
    pub fn parse(text: &str) -> Option<State> {
        match text.trim().to_ascii_uppercase().as_str() {
            "0" | "OK" => Some(State::Ok),
            "1" | "WARNING" => Some(State::Warning),
            "2" | "CRITICAL" => Some(State::Critical),
            "3" | "UNKNOWN" => Some(State::Unknown),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        })
    }
}

/// What the plugin prints (one line) and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The state, hence the exit code.
    pub state: State,
    /// The line printed on stdout (help text may span several lines).
    pub text: String,
}

impl Outcome {
    /// An outcome with this state and text.
    pub fn new(state: State, text: impl Into<String>) -> Outcome {
        Outcome {
            state,
            text: text.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_state_orders_critical_warning_unknown_ok() {
        use State::*;
        let cases = [
            (Ok, Ok, Ok),
            (Ok, Unknown, Unknown),
            (Unknown, Warning, Warning),
            (Warning, Unknown, Warning),
            (Critical, Warning, Critical),
            (Unknown, Critical, Critical),
            (Ok, Warning, Warning),
        ];
        for (a, b, want) in cases {
            assert_eq!(a.worst(b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn codes_and_names() {
        for (state, code, name) in [
            (State::Ok, 0, "OK"),
            (State::Warning, 1, "WARNING"),
            (State::Critical, 2, "CRITICAL"),
            (State::Unknown, 3, "UNKNOWN"),
        ] {
            assert_eq!(state.code(), code);
            assert_eq!(state.to_string(), name);
            assert_eq!(State::parse(name), Some(state));
            assert_eq!(State::parse(&code.to_string()), Some(state));
        }
        assert_eq!(State::parse("critical"), Some(State::Critical));
        assert_eq!(State::parse("bad"), None);
    }
}
